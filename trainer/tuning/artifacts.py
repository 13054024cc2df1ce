"""Model folders of a study's trials: safe names, keeping the best few, the best one's path."""
from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainer.tuning.storage import optuna_storage
from trainer.tuning.trials import ranked

KEEP_ARTIFACTS = 2  # model directories kept per study: those of the best complete trials
_TRIAL_DIR = re.compile(r"^trial-(\d+)$")



def study_dir_name(study: str) -> str:
    """A folder name for the study that is safe on any filesystem and unique per name.

    A readable slug of the name plus a hash of the whole name: `../x` becomes `x-<hash>`,
    never a path outside the artifacts folder.
    """
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", study).strip("-_")[:40] or "study"
    return f"{slug}-{hashlib.sha256(study.encode('utf-8')).hexdigest()[:10]}"


def keep_best_artifacts(root: Path, keep: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A study callback: delete the `trial-N` model folders of all but the best `keep` trials.

    Folders of running or waiting trials stay: another worker may be writing one right now.
    """

    def callback(study: optuna.Study, _: FrozenTrial) -> None:
        if not root.is_dir():
            return
        trials = study.get_trials(deepcopy=False)
        kept = {t.number for t in ranked(trials)[:keep]}
        kept |= {t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}
        for path in root.iterdir():
            match = _TRIAL_DIR.match(path.name)
            if match and int(match.group(1)) not in kept and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    return callback



def best_trial_artifact(store: Any, study_name: str) -> str | None:
    """The saved model folder of the study's best trial, if it is still on disk.

    Args:
        store: our Store on the study's database (its lock_timeout_s bounds the waits).
        study_name: the study.

    Returns:
        The folder, or None when the study has no complete trial or its model was not kept
        (stage 4 then retrains with the best parameters).
    """
    try:
        storage = optuna_storage(store.url, 0, lock_timeout_s=store.lock_timeout_s)
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None
    best = ranked(study.get_trials(deepcopy=False))[:1]
    if not best:
        return None
    specs = store.run_specs(stage="trial", study=study_name).values()
    artifact = next((s.artifact for s in specs if s.trial == best[0].number), None)
    return artifact if artifact and Path(artifact, "config.json").is_file() else None
