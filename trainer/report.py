"""What the database holds, as report JSON (architecture.md's schema) and as readable tables."""
from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from storage import Run
from storage.records import COMPARED_STAGES, Audit, Stage
from storage.rows import DUPLICATE_KINDS, DUPLICATE_SCOPES
from trainer.comparison import (
    accuracy_of,
    compare_on_shared_reviews,
    json_number,
    mcnemar_against,
)
from trainer.metrics import wilson_interval

_num = json_number  # short: the JSON builders below call it on every figure


def run_entry(run: Run) -> dict[str, Any]:
    """One evaluated model in the report's shape."""
    ev, spec = run.evaluation, run.spec
    s = ev.scalars
    entry = {
        "id": run.id, "stage": spec.stage, "model": spec.model, "split": spec.split, "n": ev.n,
        "data": spec.data_source, "created_at": run.created_at.isoformat(),
        "metrics": {
            "accuracy": _num(s.get("accuracy")),
            "accuracy_ci95": [_num(s.get("accuracy_ci_low")), _num(s.get("accuracy_ci_high"))],
            "loss": _num(s.get("loss")),
            "roc_auc": _num(s.get("roc_auc")),
            "roc_auc_ci95": [_num(s.get("roc_auc_ci_low")), _num(s.get("roc_auc_ci_high"))],
            "average_precision": _num(s.get("average_precision")),
            "average_precision_ci95": [_num(s.get("average_precision_ci_low")),
                                       _num(s.get("average_precision_ci_high"))],
            "ece": _num(s.get("ece")), "brier": _num(s.get("brier")),
            "per_class": {name: {"precision": _num(m.precision), "recall": _num(m.recall),
                                 "f1": _num(m.f1), "support": m.support}
                          for name, m in ev.per_class.items()},
        },
        "warnings": list(spec.warnings),
    }
    if spec.study is not None:
        entry["study"] = spec.study
    if spec.trial is not None:
        entry["trial"] = spec.trial
    return entry


def study_entries(url: str, name: str | None = None) -> list[dict[str, Any]]:
    """One entry per Optuna study (or only the one named): trial counts by state, best trial.

    Reads only (trainer.tuning.storage.optuna_reader): nothing is created in the database.

    Raises:
        StorageError: the database cannot be read.
    """
    import optuna
    from optuna.trial import TrialState

    from storage.store import NotFilledError
    from trainer.tuning.storage import optuna_reader
    from trainer.tuning.trials import quiet_optuna, ranked

    try:
        storage = optuna_reader(url)  # one engine for every study, lock-tolerant
    except NotFilledError:  # no study was ever created here
        return []
    entries = []
    try:
        with quiet_optuna():
            for study_name in optuna.get_all_study_names(storage):
                if name is not None and study_name != name:
                    continue
                trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(
                    deepcopy=False)
                count = {state: sum(t.state == state for t in trials) for state in TrialState}
                top = next(iter(ranked(trials)), None)
                entries.append({
                    "name": study_name,
                    "trials": {"complete": count[TrialState.COMPLETE],
                               "pruned": count[TrialState.PRUNED],
                               "failed": count[TrialState.FAIL],
                               "running": count[TrialState.RUNNING]},
                    "best_value": None if top is None else top.value,
                    "best_trial": None if top is None else top.number,
                    "best_params": {} if top is None else top.params,
                })
    finally:
        storage.engine.dispose()
    return entries


def build_report(store, *, with_trials: bool = False) -> dict[str, Any]:
    """The `report --json` object: evaluated models (trials only when asked) and studies.

    Each run compared with others on the same reviews (`compared_groups`) gains
    "on_shared_reviews" (`shared_accuracies`; None for the others), and "shortfalls" explains
    each fine-tuned model that scores below the baseline there (`shortfall_sentence`).

    Args:
        store: the Store, best opened with read_only=True: the studies are read only too.
        with_trials: include each tuning trial's validation run.
    """
    runs = [r for r in store.list_runs() if with_trials or r.spec.stage != Stage.TRIAL]
    entries = deduplicated_entries(store, runs)
    shared, shortfalls = compare_on_shared_reviews(store, runs)
    for entry in entries:
        entry["on_shared_reviews"] = shared.get(entry["id"])
    return {"runs": entries, "studies": study_entries(store.url),
            "audit": audit_section(store.latest_audit()), "shortfalls": shortfalls}


def empty_report() -> dict[str, Any]:
    """The `report --json` object of a database that holds nothing of this tool yet."""
    return {"runs": [], "studies": [], "audit": audit_section(None), "shortfalls": []}


# --- the stages on the same reviews -------------------------------------------------------------


def deduplicated_accuracy(predictions: pd.DataFrame, leaked_test_ids: Collection[str],
                          threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy on the scored test reviews whose text does not also appear in train.

    Args:
        predictions: a run's predictions (review_id, label, prob), as Store.predictions gives them.
        leaked_test_ids: the audit's test review ids whose text train holds (a set is fastest).
        threshold: a review is called positive when prob >= threshold.

    Returns:
        accuracy, accuracy_ci95 (Wilson) and n of the reviews kept, and left_out: the leaked
        reviews the run had scored; accuracy None when nothing is kept.
    """
    scored = predictions.dropna(subset=["prob"])
    kept = scored[~scored["review_id"].isin(leaked_test_ids)]
    return {**accuracy_of(kept, threshold), "left_out": len(scored) - len(kept)}


def deduplicated_entries(store, runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Report entries of `runs`; each test-split one gains "deduplicated_test".

    That is `deduplicated_accuracy` against the latest audit of the run's data source, with the
    audit's id, or None when that source has no audit yet.
    """
    audits: dict[str, tuple[int, set[str]] | None] = {}
    entries = []
    for run in runs:
        entry = run_entry(run)
        if run.spec.split == "test":
            source = run.spec.data_source
            if source not in audits:
                audit = store.latest_audit(source)
                audits[source] = None if audit is None else (audit.id, set(audit.leaked_test_ids))
            found = audits[source]
            entry["deduplicated_test"] = None if found is None else {
                **deduplicated_accuracy(store.predictions(run.id, texts=False), found[1]),
                "audit_id": found[0]}
        entries.append(entry)
    return entries


def _rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"rate": _num(k / n) if n else None, "ci95": [_num(low), _num(high)]}


def audit_section(audit: Audit | None) -> dict[str, Any] | None:
    """The `report --json` "audit" object of an audit (README: its schema), or None."""
    if audit is None:
        return None
    groups = {k: dict.fromkeys(DUPLICATE_SCOPES, 0) for k in DUPLICATE_KINDS}
    conflicting = {k: dict.fromkeys(DUPLICATE_SCOPES, 0) for k in DUPLICATE_KINDS}
    for g in audit.duplicates:
        groups[g.kind][g.scope] += 1
        conflicting[g.kind][g.scope] += int(g.conflicting)
    c = audit.config
    found = c.get("label_issues", {})
    label_issues = {split: {"candidates": sum(i.split == split for i in audit.label_issues),
                            "n": found.get(split, {}).get("n", 0),
                            "method": found.get(split, {}).get("method")}
                    for split in ("train", "test")}
    behaviour = [{"run_id": b.run_id, "model": b.model, "test": b.test, "kind": b.kind,
                  "n": b.n, "failures": b.failures, "failure_rate": _num(b.failure_rate),
                  "failure_rate_ci95": [_num(b.ci_low), _num(b.ci_high)]}
                 for b in audit.behaviour]
    slices = [{"run_id": r.run_id, "by": r.by, "bucket": r.bucket, "n": r.n,
               "accuracy": _num(r.accuracy), "accuracy_ci95": [_num(r.ci_low), _num(r.ci_high)]}
              for r in audit.slices]
    truncation = [{"run_id": t.run_id, "max_length": t.max_length, "n": t.n,
                   "truncated": t.truncated, "truncated_share": _rate(t.truncated, t.n)["rate"],
                   "accuracy_truncated": _num(t.accuracy_truncated),
                   "accuracy_untruncated": _num(t.accuracy_untruncated)}
                  for t in audit.truncation]
    return {
        "id": audit.id, "data": audit.data_source,
        "created_at": audit.created_at.isoformat() if audit.created_at else None,
        "duration_s": audit.duration_s, "seconds": c.get("seconds", {}),
        "duplicates": {"groups": groups, "conflicting": conflicting,
                       "method": c.get("duplicates_method")},
        "leaked_test_reviews": len(audit.leaked_test_ids),
        "label_issues": label_issues, "behaviour": behaviour, "slices": slices,
        "truncation": truncation,
    }


def audit_text(section: dict[str, Any]) -> str:
    """The readable audit: duplicates, leakage, label issues, behaviour, slices, truncation."""
    d, li = section["duplicates"], section["label_issues"]
    parts = [f"Audit {section['id']} of {section['data']} ({_fmt(section['duration_s'], 1)} s)",
             _table(["duplicate groups", *DUPLICATE_SCOPES, "conflicting"],
                    [[kind, *(str(d["groups"][kind][s]) for s in DUPLICATE_SCOPES),
                      str(sum(d["conflicting"][kind].values()))] for kind in DUPLICATE_KINDS]),
             f"leaked test reviews (text also in train): {section['leaked_test_reviews']:,}",
             "label-issue candidates: " + "; ".join(
                 f"{s} {li[s]['candidates']:,} of {li[s]['n']:,}" for s in li)]
    if section["behaviour"]:
        parts += ["", _table(["model", "test", "kind", "n", "failure rate [95% CI]"], [
            [_short(b["model"]), b["test"], b["kind"], str(b["n"]),
             f"{_fmt(b['failure_rate'])} [{_fmt(b['failure_rate_ci95'][0])}, "
             f"{_fmt(b['failure_rate_ci95'][1])}]"] for b in section["behaviour"]])]
    if section["slices"]:
        parts += ["", _table(["run", "by", "slice", "n", "accuracy [95% CI]"], [
            [str(r["run_id"]), r["by"], r["bucket"], str(r["n"]),
             f"{_fmt(r['accuracy'])} [{_fmt(r['accuracy_ci95'][0])}, "
             f"{_fmt(r['accuracy_ci95'][1])}]"] for r in section["slices"]])]
    if section["truncation"]:
        parts += ["", _table(["run", "max tokens", "n", "truncated", "acc truncated",
                              "acc untruncated"], [
            [str(t["run_id"]), str(t["max_length"]), str(t["n"]),
             f"{t['truncated']:,} ({_fmt(t['truncated_share'])})",
             _fmt(t["accuracy_truncated"]), _fmt(t["accuracy_untruncated"])]
            for t in section["truncation"]])]
    return "\n".join(parts)


def audit_summary(store, audit: Audit) -> str:
    """What `python -m trainer audit` prints: the audit, then its stages' deduplicated figures."""
    runs = [store.get_run(i) for i in audit.config.get("runs", [])]
    tested = [r for r in runs if r.spec.split == "test"]
    text = audit_text(audit_section(audit))
    if tested:
        text += "\n\n" + runs_table(deduplicated_entries(store, tested))
    return text


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


SHARED_HEADER = "on the same reviews [95% CI] (n)"


def runs_table(entries: list[dict[str, Any]], extra: dict[int, str] | None = None) -> str:
    """Readable table of report run entries; `extra` adds a column (e.g. McNemar p) by run id.

    Entries with "deduplicated_test" (`deduplicated_entries`) add its accuracy, interval and n;
    entries with "on_shared_reviews" (`compare_on_shared_reviews`) add theirs where that is not
    simply every review a run scored.
    """
    headers = ["id", "stage", "model", "n", "accuracy [95% CI]", "F1 neg", "F1 pos", "ROC AUC"]
    dedup = any(e.get("deduplicated_test") for e in entries)
    shared = any(differs(e) for e in entries)
    headers += ["deduplicated test [95% CI] (n)"] if dedup else []
    headers += [SHARED_HEADER] if shared else []
    headers += ["McNemar p vs fine-tuned"] if extra is not None else []
    rows = []
    for e in entries:
        m = e["metrics"]
        lo, hi = m["accuracy_ci95"]
        row = [str(e["id"]), e["stage"], _short(e["model"]), str(e["n"]),
               f"{_fmt(m['accuracy'])} [{_fmt(lo)}, {_fmt(hi)}]",
               _fmt(m["per_class"].get("negative", {}).get("f1")),
               _fmt(m["per_class"].get("positive", {}).get("f1")), _fmt(m["roc_auc"])]
        row += [_dedup_cell(e.get("deduplicated_test"))] if dedup else []
        row += [_dedup_cell(e.get("on_shared_reviews"))] if shared else []
        rows.append(row + ([extra.get(e["id"], "")] if extra is not None else []))
    return _table(headers, rows)


def _dedup_cell(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    lo, hi = d["accuracy_ci95"]
    return f"{_fmt(d['accuracy'])} [{_fmt(lo)}, {_fmt(hi)}] ({d['n']:,})"


def studies_table(entries: list[dict[str, Any]]) -> str:
    headers = ["study", "complete", "pruned", "failed", "running", "best value", "best params"]
    rows = [[s["name"][:40], *(str(s["trials"][k]) for k in ("complete", "pruned", "failed",
                                                                "running")),
             _fmt(s["best_value"], 4), _params(s["best_params"])] for s in entries]
    return _table(headers, rows)


def _short(model: str, width: int = 40) -> str:
    return model if len(model) <= width else "…" + model[-(width - 1):]


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def render(report: dict[str, Any]) -> str:
    """The human-readable `report`: models, warnings, studies, the latest audit."""
    parts = ["Evaluated models", runs_table(report["runs"]) if report["runs"] else "(none yet)"]
    parts += shared_notes(report["runs"], report.get("shortfalls", []))
    for e in report["runs"]:
        parts += [f"warning (run {e['id']}): {w}" for w in e["warnings"]]
    studies = studies_table(report["studies"]) if report["studies"] else "(none yet)"
    parts += ["", "Studies", studies]
    if report.get("audit"):
        parts += ["", audit_text(report["audit"])]
    return "\n".join(parts)


def differs(entry: dict[str, Any]) -> bool:
    """Whether a report entry's figures on the shared reviews are on fewer reviews than its own."""
    shared = entry.get("on_shared_reviews")
    return bool(shared) and shared["n"] != entry["n"]


def shared_notes(entries: list[dict[str, Any]], shortfalls: list[dict[str, Any]]) -> list[str]:
    """Lines under the runs table: which runs were put on the same reviews, and each shortfall."""
    groups = {tuple(sorted([e["id"], *e["on_shared_reviews"]["with"]])):
              e["on_shared_reviews"]["n"] for e in entries if differs(e)}
    lines = [f"runs {', '.join(map(str, ids))}: compared on the {n:,} test reviews all of them "
             f"scored (column \"{SHARED_HEADER}\")" for ids, n in groups.items()]
    return lines + [f"note (run {s['run_id']}): {s['sentence']}" for s in shortfalls]


def summary(store, runs: list[Run]) -> str:
    """The end-of-run table of the three stages, McNemar's test against the fine-tuned model."""
    by_stage = {r.spec.stage: r for r in runs}
    ordered = [by_stage[s] for s in COMPARED_STAGES if s in by_stage]
    extra = None
    if Stage.FINETUNED in by_stage:
        tuned = by_stage[Stage.FINETUNED]
        extra = mcnemar_against(store, tuned, [r for r in ordered if r is not tuned])
        extra[tuned.id] = "–"
    shared, shortfalls = compare_on_shared_reviews(store, ordered)
    entries = [{**run_entry(r), "on_shared_reviews": shared.get(r.id)} for r in ordered]
    notes = [f"warning (run {r.id}): {w}" for r in ordered for w in r.spec.warnings]
    return "\n".join([runs_table(entries, extra), *shared_notes(entries, shortfalls), *notes])
