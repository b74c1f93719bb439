"""User-facing errors: each says which input is wrong, what is wrong with it and what to do.

The CLI prints these without a traceback; anything else escaping to the CLI is a bug in seglab.
"""

import errno


class SeglabError(Exception):
    """Base class for errors caused by the user's input, files or environment."""


class ConfigError(SeglabError):
    """A configuration value or option is unknown or invalid."""


class DataError(SeglabError):
    """A dataset file or folder is missing, unreadable or inconsistent."""


class WeightsError(SeglabError):
    """Pretrained or checkpoint weights cannot be found, downloaded, verified or mapped onto a model."""


class OutputError(SeglabError):
    """An output file cannot be written: the disk is full, the folder is read-only or not ours, ..."""


class ExportError(SeglabError):
    """A model cannot be exported, or the exported file does not reproduce the model's outputs."""


def describe_os_error(error: OSError) -> str:
    """The cause of a failed file operation in words, with its errno name: "No space left on device (ENOSPC)"."""
    name = errno.errorcode.get(error.errno or 0)
    cause = error.strerror or str(error) or type(error).__name__
    return f"{cause} ({name})" if name else cause

