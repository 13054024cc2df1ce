"""The multipage Streamlit dashboard: study explorer, evaluation and live prediction."""
