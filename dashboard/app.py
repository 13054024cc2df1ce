"""The dashboard's entry point (`streamlit run dashboard/app.py`): page config and navigation."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only dashboard/ on the path; the packages live one folder up.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

st.set_page_config(page_title="Movie-review sentiment", page_icon=":material/movie:",
                   layout="wide")
st.navigation([
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/study.py", title="Study explorer", icon=":material/science:"),
    st.Page("app_pages/evaluation.py", title="Evaluation", icon=":material/target:"),
    st.Page("app_pages/live.py", title="Live prediction", icon=":material/edit_note:"),
    st.Page("app_pages/data.py", title="Data & models", icon=":material/fact_check:"),
]).run()
