"""Hugging Face classifiers: load/predict/save, fine-tuning, attribution, fast CPU scoring."""
