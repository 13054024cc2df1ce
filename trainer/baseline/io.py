"""Saving and loading the TF-IDF baseline as JSON + .npz, without pickle."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from trainer.baseline.model import BaselineModel
from trainer.baseline.vectoriser import TOKEN_PATTERN
from trainer.errors import ModelError

FORMAT = "sentiment-tfidf-baseline/1"
JSON_NAME, NPZ_NAME = "baseline.json", "baseline.npz"


def save_baseline(model: BaselineModel, directory: str | Path) -> Path:
    """Write the model as JSON (format, vocabulary, intercept, params) and .npz (idf, coef).

    Args:
        model: a trained model.
        directory: created if missing; existing baseline files in it are replaced.

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "intercept": model.intercept, "params": model.params,
            "vocabulary": list(model.vocabulary)}
    (directory / JSON_NAME).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    with open(directory / NPZ_NAME, "wb") as handle:
        np.savez(handle, idf=np.asarray(model.idf, np.float64),
                 coef=np.asarray(model.coef, np.float64))
    return directory


def _fail(path: Path, found: str) -> ModelError:
    return ModelError(f"Expected a baseline model written by save_baseline at {path}, found "
                      f"{found}; retrain it with `python -m trainer baseline`.")


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"unreadable JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _fail(path, f"format {found!r} instead of {FORMAT!r}")
    params, vocabulary = meta.get("params"), meta.get("vocabulary")
    if (not isinstance(params, dict) or not isinstance(vocabulary, list)
            or not all(isinstance(t, str) for t in vocabulary)
            or not isinstance(meta.get("intercept"), (int, float))
            or not isinstance(params.get("sublinear_tf"), bool)
            or params.get("token_pattern") != TOKEN_PATTERN):
        raise _fail(path, "missing or mistyped params, vocabulary or intercept")
    return meta


def _read_arrays(path: Path, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            idf, coef = np.asarray(arrays["idf"]), np.asarray(arrays["coef"])
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except ValueError as e:  # also what numpy raises for a pickled (object) array
        raise _fail(path, f"an unloadable array ({e})") from e
    except (OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise _fail(path, f"a damaged or foreign .npz ({type(e).__name__}: {e})") from e
    for name, array in (("idf", idf), ("coef", coef)):
        if array.shape != (n_features,) or array.dtype.kind != "f":
            raise _fail(path, f"{name} of shape {array.shape} and dtype {array.dtype} where the "
                              f"vocabulary needs ({n_features},) floats")
    return idf, coef


def load_baseline(directory: str | Path) -> BaselineModel:
    """Read a model written by `save_baseline`; never unpickles anything.

    Args:
        directory: the folder given to save_baseline.

    Returns:
        The model.

    Raises:
        ModelError: a file is missing, damaged, foreign, holds pickled data or mismatched shapes.
    """
    directory = Path(directory)
    meta = _read_meta(directory / JSON_NAME)
    idf, coef = _read_arrays(directory / NPZ_NAME, len(meta["vocabulary"]))
    return BaselineModel(tuple(meta["vocabulary"]), idf, coef, float(meta["intercept"]),
                         meta["params"])
