"""Hugging Face sequence classifiers: load/predict/save, fine-tuning engines, attribution, fast CPU scoring."""
