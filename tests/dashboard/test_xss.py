"""Hostile names and reviews (<script>, <img onerror>) are shown as text on every page."""
from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.builders import XSS
from tests.dashboard.conftest import PAGES
from tests.dashboard.test_pages import STUDY_TABS, no_exception, open_tab

Open = Callable[[str, str], AppTest]
RAW_TAG = re.compile(r"(?<!\\)<\s*/?\s*(script|img)", re.IGNORECASE)  # "<img", not "\<img"


def markdown_bodies(at: AppTest) -> list[str]:
    """Every string the browser renders as markdown: markdown, captions, titles, alerts."""
    groups = (at.markdown, at.caption, at.title, at.header, at.subheader, at.info,
              at.warning, at.error, at.success)
    return [str(e.value) for group in groups for e in group]


def assert_rendered_as_text(at: AppTest) -> None:
    no_exception(at)
    assert not at.get("html"), "st.html renders raw HTML"
    for element in [*at.markdown, *at.caption]:
        assert not element.proto.allow_html, element.value
    for body in markdown_bodies(at):
        assert not RAW_TAG.search(body), body


def all_text(at: AppTest) -> str:
    """What the user sees as text: markdown bodies, st.text, widget options, table cells."""
    parts = markdown_bodies(at) + [str(t.value) for t in at.text]
    parts += [str(o) for box in at.selectbox for o in box.options]
    parts += [frame.value.to_csv() for frame in at.dataframe]
    return "\n".join(parts)


@pytest.mark.parametrize("page", PAGES)
def test_hostile_names_never_become_markup(open_page: Open, xss_db: str, page: str) -> None:
    at = open_page(xss_db, page)
    assert_rendered_as_text(at)
    for tab in STUDY_TABS if page == "study" else ():
        assert_rendered_as_text(open_tab(at, tab))


def test_hostile_study_name_and_model_are_shown_verbatim(open_page: Open, xss_db: str) -> None:
    study = open_page(xss_db, "study")
    assert f"{XSS[0]} study" in study.selectbox(key="study_name").options
    overview = open_page(xss_db, "overview")
    assert f"tiny-bert {XSS[1]}" in all_text(overview)


def test_hostile_review_is_plain_text_in_the_error_browser(open_page: Open,
                                                          xss_db: str) -> None:
    at = open_page(xss_db, "evaluation")
    at.slider(key="eval_threshold").set_value(0.01).run()  # review 0 is negative: now an error
    errors = next(d.value for d in at.dataframe if "confidence" in d.value.columns)
    hostile = errors[errors["text"].str.contains("<script>", regex=False)]
    assert not hostile.empty
    at.selectbox(key="eval_read").set_value(hostile["review_id"].iloc[0]).run()
    assert_rendered_as_text(at)
    assert at.text[0].value.startswith(XSS[0])  # st.text: shown exactly, never parsed


def test_typed_review_with_markup_is_highlighted_as_escaped_text(open_page: Open,
                                                                  xss_db: str) -> None:
    at = open_page(xss_db, "live")
    at.toggle(key="live_explain").set_value(True)  # explanations are computed on demand
    at.text_area(key="live_text").set_value(
        f"{XSS[0]} a wonderful film {XSS[1]} [link](javascript:alert(1)) :red[x] $x$").run()
    assert_rendered_as_text(at)
    highlighted = next(body for body in markdown_bodies(at) if "-background[" in body)
    assert "\\<script\\>alert\\(1\\)\\<\\/script\\>" in highlighted
    assert "\\[link\\]\\(javascript\\:alert\\(1\\)\\)" in highlighted
    assert "\\:red\\[x\\]" in highlighted and "\\$x\\$" in highlighted


def test_raw_tag_check_tells_escaped_from_raw_markup() -> None:
    assert RAW_TAG.search("a <script>x") and RAW_TAG.search("</SCRIPT>")
    assert RAW_TAG.search("<img src=x onerror=alert(1)>")
    assert not RAW_TAG.search("a \\<script\\>x \\<img src\\=x\\>")
