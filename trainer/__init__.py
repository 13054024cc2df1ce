"""Train, tune and evaluate movie-review sentiment classifiers."""
