"""Stage 1's TF-IDF + logistic regression: cleaning, offsets, vectoriser, model, selection, I/O."""
