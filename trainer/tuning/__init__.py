"""Stage 3's Optuna study: search space, study and objective, trial records, storage, artifacts."""
