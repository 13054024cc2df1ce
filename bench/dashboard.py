"""Benchmark: each dashboard page's render time with a 1,000-trial study and 25,000 predictions.

    python -m bench dashboard [--db sqlite:///path.db] [--rebuild] [--repeats 5] [--browser]

Builds the database once (through the Store and Optuna's API; real IMDB test reviews when
../shared/data/imdb/test.parquet exists), then renders every page with streamlit's AppTest.
Prints one JSON object per page and writes them to bench/results (see bench.emit). `ours` is
the slowest warm render: the page rerun with its caches filled (what a user clicking around
sees), the first opening of the study explorer's slowest tab, or the live page classifying and
explaining a typed review (model loaded). `detail_s` adds `cold`, the first render after every
cache was cleared (libraries already imported: the cost of the first visitor after a server
start).

With --browser, the same database is served by `streamlit run` and headless Chromium (Playwright,
the system browser) loads each page and clicks through the steps the browser test asserts
(tests/dashboard/test_playwright.py): a trial link, the study's tabs, brushing, the threshold,
a typed review, a CSV. Each step is timed from the click until the page is drawn again; `ours`
is the median of its warm repeats (`detail_s` adds the first time), `meets_target` says whether
that is within BROWSER_TARGET_S.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import cpu_name, emit, slug  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAGES = ("overview", "study", "evaluation", "live", "data")
STUDY_TABS = ("History", "Importance", "Parallel coordinates", "Contour", "Slices", "Time")
IMDB_TEST = ROOT.parent / "shared" / "data" / "imdb" / "test.parquet"
DEFAULT_DB = Path("/tmp/sentiment-bench/dashboard.db")
BROWSER_TARGET_S = 1.0  # issue 14: every page load and interaction, warm, in a real browser
BROWSER_PAGES = {"overview": ("/", "Overview"), "study": ("/study", "Study explorer"),
                 "evaluation": ("/evaluation", "Evaluation"),
                 "live": ("/live", "Live prediction"), "data": ("/data", "Data & models")}
NEGATIVE_REVIEW = "Dull, boring and painful: an awful, tedious film with a clumsy script."
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


def best_trial(url: str) -> int:
    """The best trial of the database's first study (the one the explorer opens)."""
    import optuna

    name = sorted(optuna.study.get_all_study_names(url))[0]
    return optuna.load_study(study_name=name, storage=url).best_trial.number


def walk_pages(s, repeats: int):
    """Each page loaded afresh (a new tab's session), first and `repeats` times more."""
    for _ in range(1 + repeats):
        for page, (path, title) in BROWSER_PAGES.items():
            yield f"load {page}", s.open(f"load {page}", path, title)


def walk_study(s, trial: int, repeats: int):
    """The explorer's tabs (each opened from Trials), brushing, a trial's link."""
    from tests.dashboard import playwright_browser as pw

    s.open("load study", "/study", "Study explorer")
    tabs = {"History": pw.chart_titled(s, "optimisation history"),
            "Importance": pw.chart_titled(s, "hyperparameter importance").or_(
                s.text_shown("Importance is not drawn")),
            "Parallel coordinates": pw.chart_titled(s, "parallel coordinates"),
            "Contour": pw.chart_titled(s, "contour"),
            "Slices": pw.tab_chart(s, "slice plots"),
            "Time": pw.chart_titled(s, "timeline of trials")}
    trials = s.page.get_by_role("button", name="Download these trials as CSV")
    for _ in range(1 + repeats):
        for tab, expect in tabs.items():
            yield f"study: open the {tab} tab", pw.open_study_tab(s, tab, expect)
            yield "study: open the Trials tab", pw.open_study_tab(s, "Trials", trials)
    pw.open_study_tab(s, "Parallel coordinates", tabs["Parallel coordinates"])
    boxes = ((0.0, 0.3, 0.2, 0.8), (0.35, 0.7, 0.1, 0.6))  # each starts outside the other
    for i in range(2 * (1 + repeats)):
        yield "study: brush the parallel coordinates", pw.brush(s, *boxes[i % 2])[0]
    for _ in range(1 + repeats):
        yield "study: open ?trial=N", pw.open_trial_link(s, trial)


def walk_evaluation(s, repeats: int):
    """The threshold moved by one step: confusion, accuracy and errors recomputed."""
    from tests.dashboard import playwright_browser as pw

    s.open("load evaluation", "/evaluation", "Evaluation")
    for _ in range(1 + repeats):
        yield "evaluation: move the threshold", pw.move_threshold(s)


def walk_live(s, repeats: int, folder: Path, model: str | None = None):
    """Typed reviews (the first loads the model), then 6-row CSV files uploaded and scored;
    model: the option to pick in both tabs (the page's first choice when None)."""
    from tests.dashboard import playwright_browser as pw

    s.open("load live", "/live", "Live prediction")
    if model is not None:
        box = s.page.get_by_label("Review (up to", exact=False)
        pw.choose(s, "Model", model, box, "live: pick the model")
    for i in range(2 * (1 + repeats)):  # a new review each time: no cached answer
        text, label = (REVIEW, "positive") if i % 2 == 0 else (NEGATIVE_REVIEW, "negative")
        yield "live: classify a review", pw.classify_review(
            s, f"{text} Take {i}.", label, "live: classify a review")
    uploader = s.page.locator('[data-testid="stFileUploader"]')
    pw.open_live_tab(s, "A CSV file", uploader, "live: open the CSV tab")
    if model is not None:
        pw.choose(s, "Model for the file", model, uploader, "live: pick the model")
    for i in range(1 + repeats):  # a new file each time: no kept results
        upload = folder / f"reviews-{i}.csv"
        upload.write_text("id,text\n" + "".join(
            f'{i * 10 + j},"{REVIEW if j % 2 else NEGATIVE_REVIEW} Row {j}."\n'
            for j in range(6)), encoding="utf-8")
        yield "live: upload a CSV", pw.upload_csv(s, upload)
        yield "live: classify a 6-row CSV", pw.classify_file(s, "live: classify a 6-row CSV")


def browser_times(url: str, repeats: int, folder: Path,
                  live_url: str | None = None) -> dict[str, list[float]]:
    """Seconds of each step in headless Chromium: its first time, then `repeats` warm ones.

    With live_url, the live page's steps are also walked on that database with its newest
    fine-tuned model picked: steps named "… (fine-tuned MODEL)".
    """
    from tests.dashboard import playwright_browser as pw
    from tests.dashboard.browser import dashboard

    times: dict[str, list[float]] = {}
    with dashboard(url, folder / "streamlit.log", toolbar=None) as base, \
            pw.chromium_page() as page:
        s = pw.Session(page, base)
        walks = (walk_pages(s, repeats), walk_study(s, best_trial(url), repeats),
                 walk_evaluation(s, repeats), walk_live(s, repeats, folder))
        for walk in walks:
            for step, seconds in walk:
                times.setdefault(step, []).append(round(seconds, 3))
    if live_url is not None:
        label, model = fine_tuned_choice(live_url)
        with dashboard(live_url, folder / "streamlit-live.log", toolbar=None) as base, \
                pw.chromium_page() as page:
            for step, seconds in walk_live(pw.Session(page, base), repeats, folder, label):
                times.setdefault(f"{step} (fine-tuned {model})", []).append(round(seconds, 3))
    return times


def fine_tuned_choice(url: str) -> tuple[str, str]:
    """The live page's option for the database's newest loadable fine-tuned model, and its
    model name.

    Raises:
        SystemExit: the database holds no such model.
    """
    from storage.store import open_store
    from trainer.predict import model_choices

    with open_store(url, read_only=True) as store:
        for choice in model_choices(store):  # newest first within a stage
            spec = store.get_run(choice.run_id).spec
            if choice.available and spec.stage == "finetuned":
                return choice.label, spec.model
    raise SystemExit(f"--live-db {url} holds no loadable fine-tuned model; run "
                     "`python -m trainer run` into it first")


def browser_figures(times: dict[str, list[float]], device: str,
                    config: dict) -> list[dict]:
    """One figure per step: the median warm time against BROWSER_TARGET_S."""
    figures = []
    for step, values in times.items():
        warm = values[1:] or values
        ours = round(statistics.median(warm), 3)
        figures.append({"name": f"dashboard_browser_{slug(step).replace('-', '_')}",
                        "unit": "s", "ours": ours, "peer": None, "ratio": None,
                        "higher_is_better": False, "device": device,
                        "target_s": BROWSER_TARGET_S, "meets_target": ours <= BROWSER_TARGET_S,
                        "config": {**config, "step": step},
                        "detail_s": {"first": values[0], "warm": warm}})
    return figures


def app_test_figures(url: str, repeats: int, device: str) -> list[dict]:
    """Each page's render times in streamlit's AppTest (no browser)."""
    for page in PAGES:  # import every library once, so cold renders time the page itself
        open_page(page).run()
    figures = []
    for page in PAGES:
        times = measure(page, repeats)
        slowest = max(v for k, v in times.items() if k != "cold" and "loads" not in k)
        figures.append({"name": f"dashboard_page_{page}", "unit": "s", "ours": round(slowest, 3),
                        "peer": None, "ratio": None, "higher_is_better": False, "device": device,
                        "config": {"repeats": repeats, "db": url},
                        "detail_s": {k: round(v, 3) for k, v in times.items()}})
    return figures


def main(argv: list[str] | None = None) -> int:
    """Build the database if needed and print each page's figure; argv: the options."""
    parser = argparse.ArgumentParser(prog="python -m bench dashboard",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--db", help=f"database URL (default: a SQLite file {DEFAULT_DB})")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    parser.add_argument("--repeats", type=int, default=None,
                        help="warm renders per page (default 5), or warm repeats of each "
                             "browser step (default 3)")
    parser.add_argument("--browser", action="store_true",
                        help="time page loads and interactions in headless Chromium "
                             "(Playwright) instead of AppTest renders")
    parser.add_argument("--live-db", default=None, metavar="URL",
                        help="with --browser, also walk the live page on this database (one "
                             "holding a fine-tuned transformer, e.g. sqlite:///runs/sentiment.db "
                             "after `python -m trainer run --model minilm-offline`)")
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
    device = cpu_name()
    if args.browser:
        repeats = 3 if args.repeats is None else args.repeats
        with tempfile.TemporaryDirectory(prefix="bench-browser-") as folder:
            times = browser_times(url, repeats, Path(folder), args.live_db)
        figures = browser_figures(times, device, {"repeats": repeats, "db": url})
        emit("dashboard-browser", figures, args.results_dir, args.tag)
        return 0
    repeats = 5 if args.repeats is None else args.repeats
    emit("dashboard", app_test_figures(url, repeats, device), args.results_dir, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
