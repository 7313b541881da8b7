"""Exception types, one per failure family.

The CLI turns every :class:`LnfError` into a one-line message and a non-zero exit status;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LnfError(Exception):
    """Base class of the errors a user can cause and fix (bad input, missing files, ...)."""


class ConfigError(LnfError):
    """An invalid option or combination of options."""


class DatasetError(LnfError):
    """A dataset that is unknown, missing, malformed or fails validation."""


class DownloadError(DatasetError):
    """A download that failed, from every mirror."""


class ChecksumError(DownloadError):
    """A downloaded file whose SHA-256 differs from the known one."""


class CheckpointError(LnfError):
    """A checkpoint that is missing, corrupt or incompatible."""
