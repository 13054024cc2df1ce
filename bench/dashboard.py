"""Benchmark: each dashboard page's render time with a 1,000-trial study and 25,000 predictions.

    python -m bench dashboard [--db sqlite:///path.db] [--rebuild] [--repeats 5]

Builds the database once (through the Store and Optuna's API; real IMDB test reviews when
../shared/data/imdb/test.parquet exists), then renders every page with streamlit's AppTest.
Prints one JSON object per page and writes them to bench/results (see bench.emit). `ours` is
the slowest warm render: the page rerun with its caches filled (what a user clicking around
sees), the first opening of the study explorer's slowest tab, or the live page classifying and
explaining a typed review (model loaded). `detail_s` adds `cold`, the first render after every
cache was cleared (libraries already imported: the cost of the first visitor after a server
start).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import cpu_name, emit  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAGES = ("overview", "study", "evaluation", "live", "data")
STUDY_TABS = ("History", "Importance", "Hyperparameters", "Time")
IMDB_TEST = ROOT.parent / "shared" / "data" / "imdb" / "test.parquet"
DEFAULT_DB = Path("/tmp/sentiment-bench/dashboard.db")
REVIEW = ("I expected little from this film, but the cast is wonderful and the story moving; "
          "only the ending drags a bit. " * 8)


def build(url: str, folder: Path) -> None:
    """Fill the bench database: three stages on 25,000 reviews, 1,000 trials with their runs."""
    from tests.dashboard import builders

    if IMDB_TEST.exists():
        reviews = builders.imdb_reviews(IMDB_TEST, 25_000)
    else:
        reviews = builders.synthetic_reviews(25_000)
    builders.thousand_trials(url, folder / "artifacts", reviews)


def render(at, page: str) -> float:
    """Seconds to render `page` once more in an AppTest that already shows it."""
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"the {page} page raised: {at.exception[0].value}")
    return elapsed


def open_page(page: str):
    """An AppTest showing `page` (the first run renders the default page)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py")
    return at


def measure(page: str, repeats: int) -> dict[str, float]:
    """Seconds to render one page: cold (caches cleared), warm (median), and for the study
    explorer each lazy tab's first opening (importance and charts computed then)."""
    import streamlit as st

    at = open_page(page)
    st.cache_data.clear()
    st.cache_resource.clear()
    times = {"cold": render(at, page)}
    times["warm"] = statistics.median(render(at, page) for _ in range(repeats))
    for tab in STUDY_TABS if page == "study" else ():
        at.session_state["study_tab"] = tab
        times[f"tab {tab}"] = render(at, page)
    if page == "live":  # classify and explain a typed review with the stored baseline
        at.text_area(key="live_text").set_value(REVIEW)
        times["first review (loads the model)"] = render(at, page)
        at.text_area(key="live_text").set_value(REVIEW + " Recommended.")
        times["next review"] = render(at, page)
    return times


def main(argv: list[str] | None = None) -> int:
    """Build the database if needed and print each page's figure; argv: the options."""
    parser = argparse.ArgumentParser(prog="python -m bench dashboard",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--db", help=f"database URL (default: a SQLite file {DEFAULT_DB})")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    parser.add_argument("--repeats", type=int, default=5, help="warm renders per page")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args(argv)
    url = args.db or f"sqlite:///{DEFAULT_DB}"
    if args.db is None and (args.rebuild or not DEFAULT_DB.exists()):
        DEFAULT_DB.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_DB.unlink(missing_ok=True)
        print(f"building {DEFAULT_DB} (a few minutes)…", file=sys.stderr)
        build(url, DEFAULT_DB.parent)
    os.environ["SENTIMENT_DB"] = url
    for page in PAGES:  # import every library once, so cold renders time the page itself
        open_page(page).run()
    device, figures = cpu_name(), []
    for page in PAGES:
        times = measure(page, args.repeats)
        slowest = max(v for k, v in times.items() if k != "cold" and "loads" not in k)
        figures.append({"name": f"dashboard_page_{page}", "unit": "s", "ours": round(slowest, 3),
                        "peer": None, "ratio": None, "higher_is_better": False, "device": device,
                        "config": {"repeats": args.repeats, "db": url},
                        "detail_s": {k: round(v, 3) for k, v in times.items()}})
    emit("dashboard", figures, args.results_dir, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
