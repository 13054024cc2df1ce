"""Side-by-side benchmarks (ours vs the plain-library peer): figures, JSON lines, result files."""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"
KEYS = ("name", "unit", "ours", "peer", "ratio", "higher_is_better", "device")


def figure(name: str, unit: str, ours: float, peer: float, *, higher_is_better: bool,
           device: str, **extra: Any) -> dict[str, Any]:
    """One benchmark figure; ratio > 1 always means ours is better (peer/ours for times).

    Args:
        name: what is measured, e.g. "train_samples_per_s".
        unit: its unit, e.g. "samples/s".
        ours: our value.
        peer: the plain-library peer's value, measured in the same run.
        higher_is_better: whether a larger value is better.
        device: the card or CPU it ran on.
        **extra: further keys (configuration, notes) appended after the standard ones.

    Returns:
        A JSON-ready dict with the keys in KEYS first.
    """
    ours, peer = float(ours), float(peer)
    if higher_is_better:
        ratio = ours / peer if peer else float("inf")
    else:
        ratio = peer / ours if ours else float("inf")
    values = (name, unit, _round(ours), _round(peer), _round(ratio), higher_is_better, device)
    return {**dict(zip(KEYS, values, strict=True)), **extra}


def _round(value: float) -> float:
    return float(f"{value:.5g}")


def default_data() -> str:
    """IMDB_DATA when set, else the shared IMDB parquet folder beside the checkout."""
    return os.environ.get("IMDB_DATA") or str(DEFAULT_DATA)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every side-by-side benchmark takes: data, seed and where results go."""
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--tag", default="", help="suffix of the results file name")


def cpu_name() -> str:
    """The CPU's model name and the cores this process may use: "<model>, 2 cores"."""
    import platform

    name = platform.processor() or platform.machine() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def device_name(device: str) -> str:
    """A readable name of the device: the GPU's name on CUDA, else the CPU's."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def slug(text: str) -> str:
    """A file-name-safe form of a device name: "AMD EPYC, 2 cores" -> "amd-epyc-2-cores"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def emit(bench: str, figures: list[dict[str, Any]], results_dir: str | os.PathLike | None = None,
         tag: str = "") -> Path:
    """Print one JSON object per figure and write them to <results_dir>/<bench>-<device>.jsonl.

    Args:
        bench: the benchmark's name (train, infer, baseline, ...).
        figures: from figure(); all share one device.
        results_dir: where the file goes; bench/results when None.
        tag: appended to the file name, to keep several runs of one benchmark apart.

    Returns:
        The file written.
    """
    lines = [json.dumps(f) for f in figures]
    for line in lines:
        print(line, flush=True)
    device = figures[0]["device"] if figures else "unknown"
    directory = Path(results_dir) if results_dir else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}-{slug(device)}{'-' + slug(tag) if tag else ''}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def timed(fn: Callable[[], Any], device: Any) -> tuple[Any, float]:
    """Run fn and return (its result, seconds), synchronising CUDA on both sides."""
    import torch

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    return result, time.perf_counter() - start
