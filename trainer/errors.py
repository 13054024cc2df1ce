"""The trainer package's error hierarchy: each message tells the user what to do."""
from __future__ import annotations


class TrainerError(Exception):
    """A problem the user can fix; the CLI prints the message on one line and exits 1."""


class DataError(TrainerError):
    """The data source is missing, unreadable or not IMDB-shaped."""


class ModelError(TrainerError):
    """A model could not be loaded, saved or understood."""


class ConfigError(TrainerError):
    """An option, environment variable or config file holds a bad value."""


class TrainingDiverged(ModelError):
    """The training loss became NaN or infinite; a lower learning rate usually helps."""


class TrialFailed(TrainerError):
    """A trial could not finish (training diverged, out of memory); the study goes on."""
