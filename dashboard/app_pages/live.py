"""Live prediction: classify a typed review or a CSV with any stored model, and say why."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, live_views, resources, views, widgets
from trainer import predict
from trainer.errors import DataError, TrainerError
from trainer.predict import MAX_REVIEW_CHARS, ModelChoice, validate_review

BATCH = 64
MAX_COMPARED = 8

st.title("Live prediction")
url = widgets.database_url()


def pick_model(choices: list, label: str, key: str) -> ModelChoice:
    by_ref = {c.ref: c for c in choices}
    ref = st.selectbox(label, list(by_ref), key=key, format_func=lambda r: by_ref[r].label)
    return by_ref[ref]


def show_one(url: str, choice: ModelChoice, text: str) -> None:
    predictor = resources.predictor(url, choice.ref)
    answer = live_views.verdict(choice.label, float(predictor.predict_proba([text])[0]))
    left, right = st.columns(2)
    left.metric("label", answer.label)
    right.metric(f"probability of {answer.label}", f"{answer.probability:.3f}")
    try:
        contributions = predictor.explain(text, top_k=10)
    except Exception as e:  # noqa: BLE001 - the label stands; a failed explanation is no crash
        widgets.say("warning", f"Could not explain this prediction ({type(e).__name__}: {e}).")
        return
    if not contributions:
        st.caption("No single word stood out for this review.")
        return
    st.caption("Words that pushed towards positive are green, towards negative red.")
    st.markdown(live_views.highlight_markdown(text, contributions))
    st.altair_chart(charts.contributions_chart(live_views.contributions_frame(contributions)),
                    key="live_contributions")


def show_all(url: str, choices: list, text: str) -> None:
    rows = []
    for choice in choices[:MAX_COMPARED]:
        try:
            prob = float(resources.predictor(url, choice.ref).predict_proba([text])[0])
            answer = live_views.verdict(choice.label, prob)
            rows.append({"model": choice.label, "label": answer.label,
                         "probability": answer.probability, "positive": prob, "problem": ""})
        except TrainerError as e:
            rows.append({"model": choice.label, "label": "", "probability": np.nan,
                         "positive": np.nan, "problem": str(e)})
    st.dataframe(rows, hide_index=True, key="live_all_table")


def review_tab(url: str, choices: list) -> None:
    choice = pick_model(choices, "Model", "live_model")
    text = st.text_area(f"Review (up to {MAX_REVIEW_CHARS:,} characters)", key="live_text",
                        height=180, placeholder="Paste or type a movie review…")
    every = st.toggle("Compare every stored model side by side", key="live_all")
    if not text:
        st.caption("Type a review to classify it.")
        return
    try:
        text = validate_review(text)
    except TrainerError as e:
        widgets.say("error", str(e))
        return
    with widgets.page_errors("classify the review"):
        show_one(url, choice, text)
    if every:
        st.subheader("All models")
        show_all(url, choices, text)


def batch_tab(url: str, choices: list) -> None:
    upload = st.file_uploader("CSV with a column named text (UTF-8)", type=["csv"],
                              key="live_csv")
    if upload is None:
        return
    try:
        table = predict.read_reviews_csv(upload.getvalue(), upload.name,
                                         max_rows=live_views.MAX_UPLOAD_ROWS)
    except DataError as e:
        widgets.say("error", str(e))
        return
    choice = pick_model(choices, "Model for the file", "live_batch_model")
    st.caption(f"{len(table):,} reviews in {views.escape_markdown(upload.name)}")
    if table.notice:
        st.caption(views.escape_markdown(table.notice))
    if not st.button("Classify the file", key="live_batch_run"):
        return
    with widgets.page_errors("classify the file"):
        result = classify(url, choice, table.reviews)
        st.dataframe(result.head(200), hide_index=True, key="live_batch_table")
        st.download_button("Download the results as CSV", views.safe_csv(result),
                           file_name="predictions.csv", mime="text/csv", key="live_batch_csv")


def classify(url: str, choice: ModelChoice, texts: list[str]) -> pd.DataFrame:
    predictor = resources.predictor(url, choice.ref)
    cleaned, errors = live_views.validated(texts)
    probs = np.full(len(texts), np.nan)
    valid = [i for i, e in enumerate(errors) if e is None]
    bar = st.progress(0.0, text="Classifying…")
    for start in range(0, len(valid), BATCH):
        chunk = valid[start:start + BATCH]
        probs[chunk] = predictor.predict_proba([cleaned[i] for i in chunk])
        bar.progress(min(1.0, (start + len(chunk)) / len(valid)),
                     text=f"{start + len(chunk):,} of {len(valid):,} reviews")
    bar.progress(1.0, text=f"Done: {len(valid):,} reviews classified")
    return live_views.batch_frame(texts, probs.tolist(), errors, choice.label)


def show(url: str) -> None:
    choices = resources.model_choices(url)
    usable = [c for c in choices if c.available]
    gone = [{"model": c.label, "why": c.reason} for c in choices if not c.available]
    if gone:
        with st.expander(f"{len(gone)} stored model{'s' if len(gone) > 1 else ''} cannot be "
                         "loaded"):
            st.dataframe(gone, hide_index=True, key="live_gone")
    if not usable:
        st.info("The database holds no saved model yet. Run `python -m trainer baseline` "
                "(a minute on a laptop) or `python -m trainer run`, then reload this page.")
        return
    one, batch = st.tabs(["One review", "A CSV file"])
    with one:
        review_tab(url, usable)
    with batch:
        batch_tab(url, usable)


with widgets.page_errors("load the models"):
    if widgets.open_database(url) is not None:
        show(url)
