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


class FolderLockedError(LnfError):
    """A run folder (:class:`pyro_lnf.io.FolderLock`), or a file such as ``lnf evaluate
    --partial``'s, that another live process holds."""


class DivergenceError(LnfError):
    """Training met a non-finite loss, gradient or distribution parameter and stopped; the
    run folder keeps its last good checkpoint."""


class Interrupted(LnfError):
    """A command stopped on SIGINT or SIGTERM at a point it can continue from.

    :ivar signum: the signal; the command line exits with ``128 + signum`` (130, 143).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingInterrupted(Interrupted):
    """Training stopped on SIGINT or SIGTERM after saving its exact position."""


class EvaluationInterrupted(Interrupted):
    """``lnf evaluate --partial`` stopped between batches; its file keeps the finished ones."""
