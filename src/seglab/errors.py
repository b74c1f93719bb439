"""User-facing errors: each says which input is wrong, what is wrong with it and what to do.

The CLI prints these without a traceback; anything else escaping to the CLI is a bug in seglab.
"""


class SeglabError(Exception):
    """Base class for errors caused by the user's input, files or environment."""


class ConfigError(SeglabError):
    """A configuration value or option is unknown or invalid."""


class DataError(SeglabError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class WeightsError(SeglabError):
    """Pretrained or checkpoint weights cannot be found, downloaded, verified or mapped onto a model."""
