"""A real browser: headless Chromium opens each page of `streamlit run` on a populated database."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.ci import missing
from tests.dashboard import browser
from tests.dashboard.builders import XSS

PAGES = {"/": "Overview", "/study": "Study explorer", "/study?study_tab=History": "Study explorer",
         "/study?study_tab=Importance": "Study explorer",
         "/study?study_tab=Slices": "Study explorer", "/evaluation": "Evaluation",
         "/live": "Live prediction", "/data": "Data & models"}


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = browser.chromium()
    if binary is None:
        missing("chromium (apt-get install chromium)")
    return binary


@pytest.mark.slow
def test_every_page_renders_in_chromium_without_an_exception(chromium: str, xss_db: str,
                                                             tmp_path: Path) -> None:
    with browser.dashboard(xss_db, tmp_path / "streamlit.log") as base, browser.browser() as tab:
        for path, title in PAGES.items():
            tab.open(base + path, timeout_s=120)
            shot = tmp_path / f"{path.strip('/').replace('?', '_') or 'overview'}.png"
            tab.screenshot(shot)
            html, text = tab.html(), tab.text()
            assert 'data-testid="stException"' not in html, (path, text[:2000])
            assert "Traceback" not in text, (path, text[:2000])
            assert title in text, (path, text[:500])
            assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
            # Hostile names arrive as text: no <script> or <img onerror> element was created.
            assert tab.evaluate("document.querySelectorAll('img[onerror]').length") == 0
            assert "alert(1)" not in tab.evaluate(
                "[...document.scripts].map(s => s.textContent).join(' ')")
            if path.startswith("/study"):  # the study's name is shown, as plain text
                shown = tab.evaluate("[...document.querySelectorAll('input')]"
                                     ".map(i => i.value || i.placeholder).join('\\n')")
                assert f"{XSS[0]} study" in shown + text


@pytest.mark.slow
def test_page_html_holds_no_password_and_visitors_get_no_url_box(chromium: str, xss_db: str,
                                                                 tmp_path: Path) -> None:
    password = "S3cretPW"
    secret = (f"postgresql+psycopg://postgres:{password}@127.0.0.1:{browser.free_port()}/x"
              f"?password={password}-2")
    log = tmp_path / "streamlit.log"
    # SENTIMENT_DB holds the password; `-- --allow NAME=URL` (the script's own argument) lets
    # visitors switch to one other database, by name. The toolbar is left to the repository's
    # .streamlit/config.toml.
    with browser.dashboard(secret, log, toolbar=None, script_args=("--allow", f"xss={xss_db}")
                           ) as base, browser.browser() as tab:
        for path in ("/", "/study", "/evaluation", "/live"):
            tab.open(base + path, timeout_s=120)
            html, text = tab.html(), tab.text()
            assert password not in html, path
            assert "postgres:***@127.0.0.1" in text, (path, text[:1000])
            assert "cannot read its database" in text, (path, text[:1000])
            assert 'data-testid="stTextInput"' not in html  # nowhere to type a URL
            assert 'data-testid="stSelectbox"' in html  # the operator's list, by name
            assert 'data-testid="stAppDeployButton"' not in html and "Deploy" not in text
    assert password not in log.read_text()  # the reasons are logged, the password is not
    assert "Connection refused" in log.read_text()
