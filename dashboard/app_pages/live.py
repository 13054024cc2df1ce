"""Live prediction: classify a typed review or a CSV with any stored model, and say why."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, live_views, resources, views, widgets
from dashboard.live_views import PROB, UNTRAINED, ModelCard
from storage import StorageError
from trainer import predict
from trainer.errors import DataError, TrainerError
from trainer.predict import MAX_REVIEW_CHARS, validate_review

BATCH = 64
MAX_COMPARED = 8
TABS = ("One review", "A CSV file")
RESULTS = "live_batch_results"  # session state: (file digest, run id) -> results, kept
KEPT_RESULTS = 4  # results of this many files (or models) are kept per visitor

st.title("Live prediction")
url = widgets.database_url()


def pick_model(cards: list[ModelCard], label: str, key: str) -> ModelCard:
    """A model from the list, at first the first one whose head was trained."""
    by_id = {c.run_id: c for c in cards}
    first = next((i for i, c in enumerate(cards) if not c.untrained), 0)
    run_id = st.selectbox(label, list(by_id), index=first, key=key,
                          format_func=lambda i: by_id[i].option)
    return by_id[run_id]


def untrained_warning(card: ModelCard) -> None:
    if card.untrained:
        st.warning(f"{UNTRAINED}. This model's sentiment head was never trained (its checkpoint "
                   "had none), so its verdicts are coin tosses; pick a fine-tuned model.")


def show_verdict(url: str, card: ModelCard, text: str) -> None:
    """The verdict beside the model's stored accuracy, its interval and n: how far to trust it,
    and what the loaded model says of itself (an untrained head, an assumed label order)."""
    positive = resources.prob_positive(url, card.run_id, text)
    loaded = resources.predictor(url, card.run_id)
    # getattr: predictors tell untrained_head and notes; a stand-in model may not.
    if getattr(loaded, "untrained_head", False):
        card = replace(card, untrained=True)
    answer = live_views.verdict(card.label, positive)
    left, middle, right = st.columns(3)
    left.metric("label", answer.label)
    middle.metric(PROB, f"{positive:.3f}")
    right.metric(f"{card.split} accuracy", card.accuracy_text)
    right.caption(card.accuracy_note)
    untrained_warning(card)
    for note in () if card.untrained else getattr(loaded, "notes", ()):
        widgets.say("caption", note)


def show_explanation(url: str, card: ModelCard, text: str) -> None:
    try:
        contributions = resources.explanation(url, card.run_id, text)
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


def show_all(url: str, cards: list[ModelCard], text: str) -> None:
    rows: list[tuple[ModelCard, float | None, str]] = []
    for card in cards[:MAX_COMPARED]:
        try:
            rows.append((card, resources.prob_positive(url, card.run_id, text), ""))
        except TrainerError as e:
            rows.append((card, None, str(e)))
    if len(cards) > MAX_COMPARED:
        st.caption(f"The first {MAX_COMPARED} of {len(cards)} models, in the list's order.")
    st.dataframe(live_views.comparison_frame(rows), hide_index=True, key="live_all_table")


def review_tab(url: str, cards: list[ModelCard], active: bool) -> None:
    """The widgets always (a hidden tab keeps what was typed); the models run only when open."""
    card = pick_model(cards, "Model", "live_model")
    text = st.text_area(f"Review (up to {MAX_REVIEW_CHARS:,} characters)", key="live_text",
                        height=180, placeholder="Paste or type a movie review…")
    explain = st.toggle("Explain this prediction", key="live_explain",
                        help="Which words drove the verdict (seconds with a transformer).")
    every = st.toggle("Compare every stored model side by side", key="live_all")
    if not active:
        return
    if not text:
        st.caption("Type a review to classify it.")
        return
    try:
        text = validate_review(text)
    except TrainerError as e:
        widgets.say("error", str(e))
        return
    with widgets.page_errors("classify the review"):
        show_verdict(url, card, text)
        if explain:
            show_explanation(url, card, text)
    if every:
        st.subheader("All models")
        show_all(url, cards, text)


def batch_tab(url: str, cards: list[ModelCard], active: bool) -> None:
    upload = st.file_uploader("CSV with a column named text (UTF-8)", type=["csv"],
                              key="live_csv")
    card = pick_model(cards, "Model for the file", "live_batch_model")
    if not active or upload is None:
        return
    data = upload.getvalue()
    try:
        table = predict.read_reviews_csv(data, upload.name, max_rows=live_views.MAX_UPLOAD_ROWS)
    except DataError as e:
        widgets.say("error", str(e))
        return
    st.caption(f"{len(table):,} reviews in {views.escape_markdown(upload.name)}")
    if table.notice:
        st.caption(views.escape_markdown(table.notice))
    untrained_warning(card)
    kept = st.session_state.setdefault(RESULTS, {})
    key = (hashlib.sha256(data).hexdigest(), card.run_id)
    # A click is true for one run only: the results live in session state, so they stay through
    # the rerun a download (or any widget) causes.
    if st.button("Classify the file", key="live_batch_run") and key not in kept:
        with widgets.page_errors("classify the file"):
            keep(kept, key, classify(url, card, table))
    if key in kept:
        show_results(kept[key], card)


def keep(kept: dict, key: tuple[str, int], result: pd.DataFrame) -> None:
    kept.pop(key, None)
    kept[key] = result
    while len(kept) > KEPT_RESULTS:
        kept.pop(next(iter(kept)))  # the oldest: dicts keep insertion order


def show_results(result: pd.DataFrame, card: ModelCard) -> None:
    st.caption(f"{card.label}: {card.split} accuracy {card.accuracy_text} "
               f"({card.accuracy_note}). prob_positive is the probability of positive.")
    st.dataframe(result.head(200), hide_index=True, key="live_batch_table")
    st.download_button("Download the results as CSV", views.safe_csv(result),
                       file_name="predictions.csv", mime="text/csv", key="live_batch_csv",
                       on_click="ignore")


def classify(url: str, card: ModelCard, table: predict.ReviewTable) -> pd.DataFrame:
    predictor = resources.predictor(url, card.run_id)
    cleaned, errors = live_views.validated(table.reviews)
    probs = np.full(len(cleaned), np.nan)
    valid = [i for i, e in enumerate(errors) if e is None]
    bar = st.progress(0.0, text="Classifying…")
    for start in range(0, len(valid), BATCH):
        chunk = valid[start:start + BATCH]
        probs[chunk] = predictor.predict_proba([cleaned[i] for i in chunk])
        bar.progress(min(1.0, (start + len(chunk)) / len(valid)),
                     text=f"{start + len(chunk):,} of {len(valid):,} reviews")
    bar.progress(1.0, text=f"Done: {len(valid):,} reviews classified")
    return live_views.batch_frame(table.frame, probs.tolist(), errors, card.label)


def model_cards(url: str, choices: list) -> list[ModelCard]:
    # Each run read alone and kept (a run never changes): listing every run, trials included,
    # took 0.85-1.6 s with 1,000 trials each time the list's cache went stale.
    return [live_views.model_card(c.label, c.run_id, stored_run(url, c.run_id))
            for c in choices]


def stored_run(url: str, run_id: int):
    try:
        return resources.stored_run(url, run_id)
    except StorageError:  # deleted since the choices were listed: its accuracy is unknown
        return None


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
    cards = model_cards(url, usable)
    # Lazy tabs: only the open one scores, so a typed review costs nothing while a file is
    # classified; the open tab is in the URL (?live_tab=A+CSV+file), so it can be linked.
    tabs = st.tabs(TABS, key="live_tab", on_change="rerun", bind="query-params")
    for body, tab in zip((review_tab, batch_tab), tabs):
        with tab:
            body(url, cards, bool(tab.open))


with widgets.page_errors("load the models"):
    if widgets.open_database(url) is not None:
        show(url)
