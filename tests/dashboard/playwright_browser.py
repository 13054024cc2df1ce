"""Playwright on Debian's Chromium (no browser download): open dashboard pages, act, time it.

The browser test (tests/dashboard/test_playwright.py) and `python -m bench dashboard --browser`
walk the same steps below, so the timings printed are those of the behaviour asserted.

    python -m tests.dashboard.playwright_browser DATABASE_URL OUT_DIR

saves the README's screenshots of every page (dashboard/screenshots) into OUT_DIR.
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.dashboard import browser

LAUNCH_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking")
# Busy: a script run, a spinner or a placeholder is on screen, or an element is stale (drawn
# by the previous run and not yet replaced).
BUSY_SELECTOR = ", ".join([*(f'[data-testid="{t}"]' for t in ("stStatusWidget", "stSpinner",
                                                               "stSkeleton")),
                           '[data-stale="true"]'])
QUIET_S = 0.5  # no run starts within this long after the last one ended: the page is drawn
TIMEOUT_S = 120.0  # generous: the server's first run imports scipy, optuna and altair
# Each drawn Vega chart: its title, axes (title, tick labels), legends' labels and every text.
CHARTS_JS = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg.marks')]
  .map(svg => {
    const texts = (root, sel) => [...root.querySelectorAll(sel)].map(t => t.textContent);
    return {
      title: texts(svg, 'g.role-title text').join(' '),
      axes: [...svg.querySelectorAll('g.role-axis')].map(a => ({
        title: texts(a, '.role-axis-title text').join(' '),
        labels: texts(a, '.role-axis-label text')})),
      legends: [...svg.querySelectorAll('g.role-legend')].map(l => ({
        title: texts(l, '.role-legend-title text').join(' '),
        labels: texts(l, '.role-legend-label text')})),
      texts: texts(svg, 'text')};
  })"""
SAMPLE_CSV = ('id,text,source\n1,"A wonderful, moving film; the cast is superb.",imdb\n'
              '2,"Dull and boring: an awful, tedious mess.",imdb\n'
              '3,"Charming and funny, if a little long.",letterboxd\n')
REVIEW = ("I expected little from this film, but the cast is wonderful and the story moving; "
          "only the ending drags a bit.")


def chromium_path() -> str | None:
    """The system Chromium Playwright launches, if one is installed."""
    return browser.chromium()


def playwright_missing() -> bool:
    """Whether the `playwright` package is absent."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return True
    return False


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A Playwright page in headless system Chromium; downloads are accepted."""
    from playwright.sync_api import sync_playwright

    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("no chromium binary; install it (apt-get install chromium)")
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=binary, args=list(LAUNCH_ARGS),
                                          headless=True)
        try:
            context = chromium.new_context(viewport={"width": width, "height": height},
                                           accept_downloads=True)
            # A grid's "Download as CSV" asks for a file through the File System Access picker
            # where the browser has one: headless, that dialog never answers; a plain download
            # is what a browser without the picker gets.
            context.add_init_script("delete window.showSaveFilePicker;")
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_S * 1000)
            yield page
        finally:
            chromium.close()


@dataclass
class Session:
    """One visitor on a running dashboard: each step is timed until the page is drawn again."""

    page: object
    base: str
    timings: dict[str, float] = field(default_factory=dict)

    def settle(self, timeout_s: float = TIMEOUT_S) -> float:
        """Wait until nothing is busy for QUIET_S; returns the moment it last went idle."""
        deadline, idle_since = time.perf_counter() + timeout_s, None
        while time.perf_counter() < deadline:
            busy = self.page.locator(BUSY_SELECTOR).count() > 0
            now = time.perf_counter()
            if busy:
                idle_since = None
            else:
                idle_since = idle_since or now
                if now - idle_since >= QUIET_S:
                    return idle_since
            self.page.wait_for_timeout(40)
        raise TimeoutError(f"{self.page.url} kept running for {timeout_s:.0f} s")

    def step(self, name: str, action: Callable[[], object], expect: Callable[[], object]
             ) -> float:
        """Run `action`, wait for `expect` (a locator wait) and a drawn page; record seconds."""
        start = time.perf_counter()
        action()
        expect()
        elapsed = self.settle() - start
        self.check_no_exception(name)
        self.timings[name] = round(max(elapsed, 0.0), 3)
        print(f"{name}: {elapsed:.2f} s", flush=True)
        return elapsed

    def open(self, name: str, path: str, title: str) -> float:
        """Load base + path in the tab and wait until its title and content are drawn."""
        heading = self.page.locator('[data-testid="stMain"] h1', has_text=title)
        return self.step(name, lambda: self.page.goto(self.base + path),
                         lambda: heading.wait_for())

    def check_no_exception(self, name: str) -> None:
        found = self.page.locator('[data-testid="stException"]')
        if found.count():
            raise AssertionError(f"{name}: the page shows an exception: "
                                 f"{found.first.inner_text()}")

    def main_text(self) -> str:
        return self.page.locator('[data-testid="stMain"]').inner_text()

    def text_shown(self, pattern: str) -> object:
        """A locator of the main area's first element whose text matches the regex."""
        return self.page.locator('[data-testid="stMain"]').get_by_text(
            re.compile(pattern)).first

    def charts(self) -> list[dict]:
        """What each chart on the page draws (CHARTS_JS)."""
        return self.page.evaluate(CHARTS_JS)

    def chart(self, title: str) -> dict:
        """The drawn chart whose title contains `title`."""
        found = [c for c in self.charts() if title in c["title"]]
        if not found:
            raise AssertionError(f"no chart titled {title!r} among "
                                 f"{[c['title'] for c in self.charts()]}")
        return found[0]

    def screenshot(self, path: Path, max_height: int = 3000) -> None:
        """The whole page as drawn, up to `max_height` pixels (Streamlit scrolls inside its main
        area, so the window is made as tall as the content)."""
        width = self.page.viewport_size["width"]
        content = self.page.locator('[data-testid="stMainBlockContainer"]').evaluate(
            "e => e.scrollHeight")
        self.page.set_viewport_size({"width": width, "height": min(content + 80, max_height)})
        self.page.evaluate("document.activeElement && document.activeElement.blur()")
        self.settle()
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size({"width": width, "height": 1000})


# The steps a visitor takes; each waits for what proves the app answered, then for a drawn page.

def open_trial_link(s: Session, number: int, name: str = "study: open ?trial=N") -> float:
    """Follow a link to one trial: its diagnostics are drawn."""
    return s.step(name, lambda: s.page.goto(f"{s.base}/study?trial={number}"),
                  lambda: s.text_shown(rf"^Trial {number}: state ").wait_for())


def chart_titled(s: Session, title: str):
    """A locator of the drawn chart title containing `title`."""
    return s.page.locator('[data-testid="stVegaLiteChart"] g.role-title text',
                          has_text=title).first


def tab_chart(s: Session, title: str):
    """A drawn chart of the open tab: its SVG title containing `title`, or a canvas (Streamlit
    draws a chart of over 2,000 marks on a canvas, whose texts cannot be read back)."""
    canvas = s.page.locator('[role="tabpanel"] [data-testid="stVegaLiteChart"] canvas')
    return chart_titled(s, title).or_(canvas).first


def open_study_tab(s: Session, tab: str, expect, name: str | None = None) -> float:
    """Click a tab of the study explorer; `expect`: a locator only that tab draws."""
    return s.step(name or f"study: open the {tab} tab",
                  s.page.get_by_role("tab", name=tab, exact=True).click, expect.wait_for)


def plot_area(s: Session, chart_title: str) -> dict[str, float]:
    """The page box of a chart's plotting area (inside its axes)."""
    svg = s.page.locator('[data-testid="stVegaLiteChart"] svg.marks').filter(
        has=s.page.locator("g.role-title text", has_text=chart_title)).first
    svg.scroll_into_view_if_needed()
    return svg.locator("g.role-frame.root > g > path.background").first.bounding_box()


def brush(s: Session, left: float, right: float, top: float, bottom: float,
          name: str = "study: brush the parallel coordinates") -> tuple[float, str]:
    """Drag a box over the parallel-coordinates chart (fractions of its plotting area); returns
    the seconds until the page was drawn again and the caption that counts the trials inside."""
    area = plot_area(s, "parallel coordinates")
    before = s.main_text()

    def drag() -> None:
        x, y, w, h = area["x"], area["y"], area["width"], area["height"]
        s.page.mouse.move(x + left * w, y + top * h)
        s.page.mouse.down()
        s.page.mouse.move(x + right * w, y + bottom * h, steps=10)
        s.page.mouse.up()

    caption = s.text_shown(r"complete trials inside the brushed range")
    seconds = s.step(name, drag, lambda: _changed(s, caption, before))
    return seconds, caption.inner_text()


def _changed(s: Session, caption, before: str) -> None:
    """Wait until `caption` shows a line the page did not show before."""
    caption.wait_for()
    deadline = time.perf_counter() + TIMEOUT_S
    while caption.inner_text() in before and time.perf_counter() < deadline:
        s.page.wait_for_timeout(40)


def grid_csv(s: Session, grid) -> str:
    """The rows a dataframe shows, through its toolbar's "Download as CSV"."""
    with s.page.expect_download() as download:
        # The toolbar shows on hover; a click event needs no pointer over the canvas grid.
        grid.locator('button[aria-label="Download as CSV"]').dispatch_event("click")
    return Path(download.value.path()).read_text(encoding="utf-8-sig")


def grid_cut(grid) -> bool:
    """Whether a dataframe's columns are wider than its box (the rightmost cut off)."""
    return grid.locator(".dvn-scroller").evaluate("e => e.scrollWidth > e.clientWidth + 1")


def classify_review(s: Session, text: str, label: str, name: str) -> float:
    """Type a review, submit it (Ctrl+Enter) and wait for the expected label's verdict."""
    box = s.page.get_by_label("Review (up to", exact=False)
    verdict = s.page.locator('[data-testid="stMetric"]', has_text="label").filter(
        has_text=label)

    def submit() -> None:
        box.fill(text)
        box.press("Control+Enter")

    return s.step(name, submit, verdict.first.wait_for)


def open_live_tab(s: Session, tab: str, expect, name: str) -> float:
    return s.step(name, s.page.get_by_role("tab", name=tab, exact=True).click, expect.wait_for)


def upload_csv(s: Session, path: Path, name: str = "live: upload a CSV") -> float:
    uploader = s.page.locator('[data-testid="stFileUploader"] input[type=file]')
    return s.step(name, lambda: uploader.set_input_files(str(path)),
                  s.text_shown(rf"reviews in {re.escape(path.name)}").wait_for)


def classify_file(s: Session, name: str = "live: classify the file") -> float:
    download = s.page.get_by_role("button", name="Download the results as CSV")
    return s.step(name, s.page.get_by_role("button", name="Classify the file").click,
                  download.wait_for)


def download_results(s: Session) -> str:
    """Click "Download the results as CSV"; returns the file's text."""
    with s.page.expect_download() as download:
        s.page.get_by_role("button", name="Download the results as CSV").click()
    s.settle()
    return Path(download.value.path()).read_text(encoding="utf-8-sig")


def move_threshold(s: Session, name: str = "evaluation: move the threshold") -> float:
    """Press → on the threshold slider: 0.01 higher, the accuracy at it recomputed."""
    slider = s.page.locator('[data-testid="stSlider"]', has_text="Call a review positive") \
        .locator('input[type="range"]')
    now = float(slider.input_value())
    shown = s.text_shown(rf"^accuracy at threshold {now + 0.01:.2f}$")

    def press() -> None:
        slider.focus()
        s.page.keyboard.press("ArrowRight")

    return s.step(name, press, shown.wait_for)


def choose(s: Session, label: str, option: str | re.Pattern, expect, name: str) -> float:
    """Pick `option` (its text, or a pattern of it) in the selectbox labelled `label`."""
    box = s.page.get_by_role("combobox", name=label, exact=True)

    def pick() -> None:
        box.click()
        s.page.get_by_role("option", name=option, exact=isinstance(option, str)).click()

    return s.step(name, pick, expect.wait_for)


def click_and_wait(s: Session, name: str, target, expect) -> float:
    """Click `target` (a locator) and wait for `expect` and a drawn page."""
    return s.step(name, target.click, expect.wait_for)


def remove_state(s: Session, state: str, name: str = "study: filter out a state") -> float:
    """Remove one state from the trials table's States filter."""
    chip = s.page.locator('[data-testid="stMultiSelect"]').get_by_role(
        "button", name=f"Remove {state}", exact=True)
    gone = s.page.locator('[data-testid="stMultiSelect"] [data-tag]', has_text=state)
    return s.step(name, chip.click, lambda: gone.wait_for(state="detached"))


def screenshots(s: Session, out: Path, trial: int, csv_file: Path) -> list[Path]:
    """The README's pictures of each page, in states that show what the page is for."""
    shots = []

    def shot(name: str) -> None:
        shots.append(out / f"{name}.png")
        s.screenshot(shots[-1])

    s.open("overview", "/", "Overview")
    shot("overview")
    open_trial_link(s, trial)
    shot("study-trials")
    open_study_tab(s, "History", chart_titled(s, "optimisation history"))
    shot("study-history")
    open_study_tab(s, "Parallel coordinates", chart_titled(s, "parallel coordinates"))
    brush(s, 0.0, 0.3, 0.05, 0.45)
    shot("study-explorer")
    open_study_tab(s, "Time", chart_titled(s, "timeline of trials"))
    shot("study-time")
    s.open("evaluation", "/evaluation", "Evaluation")
    shot("evaluation")
    s.open("live", "/live", "Live prediction")
    s.page.get_by_text("Explain this prediction").click()
    classify_review(s, REVIEW, "positive", "live: a review, explained")
    shot("live")
    open_live_tab(s, "A CSV file", s.page.locator('[data-testid="stFileUploader"]'),
                  "live: CSV tab")
    upload_csv(s, csv_file)
    classify_file(s)
    shot("live-csv")
    s.open("data", "/data", "Data & models")
    shot("data")
    return shots


def main(argv: list[str]) -> int:
    from tests.dashboard.browser import dashboard

    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import optuna

    url, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    name = sorted(optuna.study.get_all_study_names(url))[0]
    trial = optuna.load_study(study_name=name, storage=url).best_trial.number
    csv_file = out / "reviews.csv"
    csv_file.write_text(SAMPLE_CSV, encoding="utf-8")
    with dashboard(url, out / "streamlit.log", toolbar=None) as base, \
            chromium_page() as page:
        for path in screenshots(Session(page, base), out, trial, csv_file):
            print(path)
    csv_file.unlink()
    (out / "streamlit.log").unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
