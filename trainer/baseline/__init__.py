"""Stage 1's TF-IDF + logistic regression: cleaning with offsets, vectoriser, model, selection, save/load."""
