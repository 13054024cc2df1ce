"""What the database holds, as report JSON (architecture.md's schema) and as readable tables."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from storage import Run
from storage.records import COMPARED_STAGES, Stage
from trainer.metrics import McNemar, mcnemar


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
    """One entry per Optuna study (or only the one named): trial counts by state, best trial."""
    import optuna
    from optuna.trial import TrialState

    from trainer.tuning.storage import optuna_storage
    from trainer.tuning.trials import quiet_optuna, ranked

    storage = optuna_storage(url, heartbeat=0)  # one engine for every study, lock-tolerant
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
    """The `report --json` object: evaluated models (trials only when asked) and studies."""
    runs = [r for r in store.list_runs() if with_trials or r.spec.stage != Stage.TRIAL]
    return {"runs": [run_entry(r) for r in runs], "studies": study_entries(store.url)}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def runs_table(entries: list[dict[str, Any]], extra: dict[int, str] | None = None) -> str:
    """Readable table of report run entries; `extra` adds a column (e.g. McNemar p) by run id."""
    headers = ["id", "stage", "model", "n", "accuracy [95% CI]", "F1 neg", "F1 pos", "ROC AUC"]
    headers += ["McNemar p vs fine-tuned"] if extra is not None else []
    rows = []
    for e in entries:
        m = e["metrics"]
        lo, hi = m["accuracy_ci95"]
        row = [str(e["id"]), e["stage"], _short(e["model"]), str(e["n"]),
               f"{_fmt(m['accuracy'])} [{_fmt(lo)}, {_fmt(hi)}]",
               _fmt(m["per_class"].get("negative", {}).get("f1")),
               _fmt(m["per_class"].get("positive", {}).get("f1")), _fmt(m["roc_auc"])]
        rows.append(row + ([extra.get(e["id"], "")] if extra is not None else []))
    return _table(headers, rows)


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
    """The human-readable `report`: models, warnings, studies."""
    parts = ["Evaluated models", runs_table(report["runs"]) if report["runs"] else "(none yet)"]
    for e in report["runs"]:
        parts += [f"warning (run {e['id']}): {w}" for w in e["warnings"]]
    studies = studies_table(report["studies"]) if report["studies"] else "(none yet)"
    parts += ["", "Studies", studies]
    return "\n".join(parts)


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
    text = runs_table([run_entry(r) for r in ordered], extra)
    notes = [f"warning (run {r.id}): {w}" for r in ordered for w in r.spec.warnings]
    return "\n".join([text, *notes])
