"""What the database holds, as report JSON (architecture.md's schema) and as readable tables."""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from storage import Run
from storage.records import COMPARED_STAGES, Audit, Stage
from storage.rows import DUPLICATE_KINDS, DUPLICATE_SCOPES
from trainer.errors import TrainerError
from trainer.metrics import McNemar, mcnemar, wilson_interval

MAX_TOKENS = 512  # what BERT-sized encoders such as MiniLM read at most


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


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


def accuracy_of(predictions: pd.DataFrame, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, its Wilson 95% interval and n of the scored reviews among `predictions`.

    Args:
        predictions: review_id, label, prob (NaN: not scored, left out).
        threshold: a review is called positive when prob >= threshold.

    Returns:
        n, accuracy (None when n is 0) and accuracy_ci95 ([low, high]).
    """
    scored = predictions.dropna(subset=["prob"])
    n, right = len(scored), int(((scored["prob"] >= threshold).astype(int)
                                 == scored["label"]).sum())
    low, high = wilson_interval(right, n)
    return {"n": n, "accuracy": _num(right / n) if n else None,
            "accuracy_ci95": [_num(low), _num(high)]}


def shared_accuracies(preds: Mapping[int, pd.DataFrame],
                      threshold: float = 0.5) -> dict[int, dict[str, Any]]:
    """Each run's accuracy on the reviews that every one of the runs scored.

    The one place where stages are put on the same reviews: the baseline scores the whole test
    split, the transformer stages a seeded subset of it, so only that subset compares them.

    Args:
        preds: run id -> the run's stored predictions (review_id, label, prob).
        threshold: a review is called positive when prob >= threshold.

    Returns:
        run id -> `accuracy_of` on the shared reviews plus "with" (the other runs' ids); empty
        with fewer than two runs, no shared review, or runs that give a review different labels
        (scored on different data).
    """
    if len(preds) < 2:
        return {}
    scored = {i: p.dropna(subset=["prob"]).drop_duplicates("review_id").set_index("review_id")
              for i, p in preds.items()}
    common = None
    for frame in scored.values():
        common = frame.index if common is None else common.intersection(frame.index)
    if common is None or common.empty:
        return {}
    labels = [frame.loc[common, "label"].to_numpy() for frame in scored.values()]
    if any((y != labels[0]).any() for y in labels[1:]):
        return {}
    return {i: {**accuracy_of(frame.loc[common].reset_index(), threshold),
                "with": sorted(j for j in scored if j != i)} for i, frame in scored.items()}


def compared_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs compared on the same reviews: per data source, the newest test-split run of
    each compared stage (baseline, pretrained, fine-tuned), in stage order; groups of two or
    more only."""
    newest: dict[str, dict[str, Run]] = {}
    for run in runs:
        spec = run.spec
        if spec.split != "test" or spec.stage not in COMPARED_STAGES:
            continue
        group = newest.setdefault(spec.data_source, {})
        if spec.stage not in group or run.id > group[spec.stage].id:
            group[spec.stage] = run
    return [[g[s] for s in COMPARED_STAGES if s in g] for g in newest.values() if len(g) > 1]


def compare_on_shared_reviews(store, runs: Sequence[Run]) -> tuple[dict[int, dict[str, Any]],
                                                                   list[dict[str, Any]]]:
    """`shared_accuracies` of each of the `compared_groups`, and their shortfalls.

    Returns:
        (run id -> its "on_shared_reviews" entry; one {"run_id", "baseline_run_id", "sentence"}
        per fine-tuned model below the baseline on the shared reviews).
    """
    shared: dict[int, dict[str, Any]] = {}
    shortfalls = []
    for group in compared_groups(runs):
        found = shared_accuracies({r.id: store.predictions(r.id, texts=False) for r in group})
        shared.update(found)
        by_stage = {r.spec.stage: r for r in group}
        base, tuned = by_stage.get(Stage.BASELINE), by_stage.get(Stage.FINETUNED)
        if found and base is not None and tuned is not None:
            sentence = shortfall_sentence(tuned, found[base.id]["accuracy"],
                                          found[tuned.id]["accuracy"], found[tuned.id]["n"])
            if sentence is not None:
                shortfalls.append({"run_id": tuned.id, "baseline_run_id": base.id,
                                   "sentence": sentence})
    return shared, shortfalls


def shortfall_sentence(tuned: Run, baseline_accuracy: float, tuned_accuracy: float,
                       n: int) -> str | None:
    """Why a fine-tuned model scores below the baseline on the same reviews, and what to change,
    in one sentence read from the run's stored config; None when it is not below.

    Args:
        tuned: the fine-tuned model's run (its config: train_size, max_length, best_params'
            num_train_epochs, device when recorded).
        baseline_accuracy, tuned_accuracy: both on the same `n` reviews (`shared_accuracies`).
        n: how many reviews both scored.
    """
    if tuned_accuracy >= baseline_accuracy:
        return None
    c = tuned.spec.config
    tokens, device = c.get("max_length"), c.get("device")
    subset = c.get("train_size") is not None or c.get("final_train_size") is not None
    option = "--final-train-size" if "final_train_size" in c else "--train-size"
    fixes = [f for f, needed in (
        (f"train on more reviews with {option}", subset),
        ("keep more tokens with --max-length", tokens is None or tokens < MAX_TOKENS),
        ("train on a GPU", device is None or not str(device).startswith("cuda"))) if needed]
    fixes = fixes or ["tune longer with --trials"]
    return (f"The fine-tuned model scores {tuned_accuracy:.3f} against the TF-IDF baseline's "
            f"{baseline_accuracy:.3f} on the same {n:,} test reviews, likely because it was "
            f"fine-tuned on {training_of(c)}, while the baseline learned from the whole train "
            f"split; to close the gap, "
            f"{', '.join(fixes[:-1]) + ' or ' if len(fixes) > 1 else ''}{fixes[-1]}.")


def training_of(config: dict[str, Any]) -> str:
    """How a fine-tuned model was trained, from its run's stored config, e.g. "2,000 training
    reviews cut to 128 tokens for 1 epoch on the CPU"; what the config lacks is said to be so.

    Args:
        config: trained_on (the reviews the model learned from; older runs: train_size, None
            for the whole train split), max_length, best_params' num_train_epochs, device.
    """
    train = config.get("trained_on", config.get("train_size"))
    tokens, device = config.get("max_length"), config.get("device")
    epochs = (config.get("best_params") or {}).get("num_train_epochs")
    return "".join([
        "the whole train split" if train is None else f"{train:,} training reviews",
        " (tokens kept not recorded)" if tokens is None else f" cut to {tokens} tokens",
        " for an unrecorded number of epochs" if epochs is None else
        f" for {epochs} epoch{'' if epochs == 1 else 's'}",
        " on a device the run did not record" if device is None else
        f" on a GPU ({device})" if str(device).startswith("cuda") else
        f" on the {str(device).upper()}"])


# --- the audit: deduplicated test figures and the audit section ---------------------------------


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


@dataclass(frozen=True)
class PairedTest:
    """McNemar's test of two runs on the reviews both scored, with each run's accuracy there."""

    test: McNemar  # b: only run A right, c: only run B right
    n: int
    accuracy_a: float
    accuracy_b: float


def paired_mcnemar(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.5) -> PairedTest | None:
    """Pair two runs' stored predictions on their shared review ids and test them.

    Args:
        a, b: predictions of runs A and B (review_id, label, prob), as Store.predictions gives
            them; reviews without a probability are left out.
        threshold: a review is called positive when prob >= threshold.

    Returns:
        The test on the shared reviews, or None when the runs share no scored review.

    Raises:
        ValueError: the two runs disagree on a review's true label (they were scored on
            different data sources).
    """
    columns = ["review_id", "label", "prob"]
    both = a[columns].dropna().merge(b[columns].dropna(), on="review_id", suffixes=("_a", "_b"))
    if (both["label_a"] != both["label_b"]).any():
        raise ValueError("the two runs give different true labels for the same review ids; "
                         "they were scored on different data sources")
    if both.empty:
        return None
    labels = both["label_a"].to_numpy()
    pa, pb = both["prob_a"].to_numpy(), both["prob_b"].to_numpy()
    return PairedTest(mcnemar(labels, pa, pb, threshold=threshold), len(both),
                      float(np.mean((pa >= threshold) == labels)),
                      float(np.mean((pb >= threshold) == labels)))


@dataclass(frozen=True)
class ReviewDiff:
    """Two runs review by review: where exactly one is right, and McNemar's test on all shared.

    rows: review_id, label, true ("negative" | "positive"), prob_a, prob_b, right ("A" | "B":
        the run that is right), gap (|prob_a - prob_b|), text (None when not stored), length;
        the largest gap first.
    paired: McNemar's exact test on all `paired.n` shared reviews (b: rows where A is right).
    """

    rows: pd.DataFrame
    paired: PairedTest


def review_diff(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.5) -> ReviewDiff:
    """The reviews on which exactly one of two runs is right, on the reviews both scored.

    Works for any two runs scored on the same reviews: two test-split stages, or two trials of
    one study on its validation split.

    Args:
        a, b: predictions of runs A and B (review_id, label, prob, and text when read with
            texts), as Store.predictions gives them; reviews without a probability are left out.
        threshold: a review is called positive when prob >= threshold.

    Returns:
        The differing reviews and the paired test.

    Raises:
        TrainerError: the runs share no scored review, or give the same review ids different
            labels (they were scored on different data).
    """
    try:
        paired = paired_mcnemar(a, b, threshold)
    except ValueError:
        raise TrainerError("The two runs give the same review ids different labels, so they "
                           "were scored on different data; pick two runs scored on the same "
                           "reviews.") from None
    if paired is None:
        raise TrainerError(
            f"The two runs share no scored review (one scored {a['prob'].notna().sum():,}, the "
            f"other {b['prob'].notna().sum():,}); pick two stages scored on the test split, or "
            "two trials of one study (scored on its validation split).")
    columns = ["review_id", "label", "prob"]
    both = a[columns].dropna().merge(b[columns].dropna().drop(columns="label"),
                                     on="review_id", suffixes=("_a", "_b"))
    right_a = (both["prob_a"] >= threshold) == both["label"]
    right_b = (both["prob_b"] >= threshold) == both["label"]
    rows = both[right_a != right_b].assign(
        true=lambda f: np.where(f["label"] == 1, "positive", "negative"),
        right=np.where(right_a[right_a != right_b], "A", "B"),
        gap=lambda f: (f["prob_a"] - f["prob_b"]).abs())
    texts = pd.concat([f[["review_id", "text"]] for f in (a, b) if "text" in f.columns]
                      or [pd.DataFrame({"review_id": [], "text": []}, dtype=object)])
    texts = texts.dropna().drop_duplicates("review_id")
    rows = rows.merge(texts, on="review_id", how="left").astype({"text": object})
    rows["text"] = rows["text"].where(rows["text"].notna(), None)
    rows["length"] = rows["text"].map(lambda t: float("nan") if t is None else float(len(t)))
    rows = rows.sort_values("gap", ascending=False, kind="stable").reset_index(drop=True)
    return ReviewDiff(rows[["review_id", "label", "true", "prob_a", "prob_b", "right", "gap",
                            "text", "length"]], paired)


def mcnemar_against(store, target: Run, others: list[Run]) -> dict[int, str]:
    """McNemar's exact p-value of `target` against each other run, on the reviews both scored."""
    mine = store.predictions(target.id, texts=False)
    out = {}
    for run in others:
        try:
            paired = paired_mcnemar(mine, store.predictions(run.id, texts=False))
        except ValueError:
            out[run.id] = "scored on other data"
            continue
        out[run.id] = "no shared reviews" if paired is None else \
            f"{paired.test.p_value:.3g} (n={paired.n})"
    return out


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
