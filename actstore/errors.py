"""Errors a user can act on. The CLI prints their message as one line, no traceback.

Library callers can catch the specific kinds below; each is a :class:`UserError`
and, where one fits, also the matching builtin (a missing store is a
``FileNotFoundError``, a bad option a ``ValueError``, an unknown name a
``LookupError``), so code written against the builtins keeps working.
"""
import errno

# errno values of a full disk (or quota), as the OS reports them.
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or a quota) is full: by its errno, or
    by its text, since HDF5 errors raised through h5py may carry no errno."""
    return getattr(error, "errno", None) in DISK_FULL or "No space left" in str(error)


class UserError(Exception):
    """Something the user can fix: the message names the thing and what to do."""


class BadOptionError(UserError, ValueError):
    """An option out of range or not one of its choices."""


class UnknownModelError(UserError, LookupError):
    """A model or weights name that no source knows."""


class UnknownModuleError(UserError, LookupError):
    """A module name the model does not have, or one that cannot be stored."""


class BadImagesError(UserError, ValueError):
    """The image folder is missing, empty, mixed, or holds unreadable images."""


class StoreConflictError(UserError):
    """The out path holds something else: another run's store, files, or other shards."""


class StoreNotFoundError(UserError, FileNotFoundError):
    """No store (or not an actstore store) where one is expected."""


class IncompleteStoreError(UserError, ValueError):
    """The store still lacks rows that this operation needs."""


class OutOfSpaceError(UserError):
    """Not enough free space for the store; what was written is kept."""


class Interrupted(UserError):
    """Ctrl-C: what was finished is kept; rerunning the command resumes."""


class StoreBusyError(StoreConflictError):
    """Another live process is writing the store (or the same shard of it)."""


class RowsNotWrittenError(UserError, ValueError):
    """A selection asked for rows the store does not hold (yet): pick from ``store.written_rows``."""


class WeightsError(UserError):
    """A weights file or download that cannot be used: missing, not plain tensors, or not fitting the model."""


class MissingPackageError(UserError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra to install."""


class InvalidStoreError(UserError, ValueError):
    """A store whose attributes break the actstore schemas."""


class SelectionError(UserError, LookupError):
    """A selection names classes or files that a store does not hold."""


class LayerNotFoundError(UserError, KeyError):
    """A layer a store does not hold; the message names the close ones."""

    def __str__(self) -> str:   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LegacyFilesError(UserError, ValueError):
    """Files of the original txt/npy layout that cannot be read as it wrote them."""


class NanRowsError(UserError, ValueError):
    """Rows that hold NaN (unwritten or corrupt) where an analysis needs values."""


class TooFewRowsError(UserError, ValueError):
    """An analysis that needs at least two rows (images or classes) got fewer."""


class StoresDifferError(UserError, ValueError):
    """Two stores compared row by row do not hold the same images."""


class MemoryBudgetError(UserError, ValueError):
    """A result or a block cannot be computed within the memory budget given."""


class InputSizeError(UserError, ValueError):
    """The transform's output does not suit the model or the store's layout:
    a size the model refuses, or images that do not all come out one size."""


class Terminated(Interrupted):
    """SIGTERM or SIGHUP (Slurm's scancel and time limit): handled as Ctrl-C."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + self.signal_number


class OutPathError(UserError, OSError):
    """The out path cannot take a store: a file where a folder must be, a
    read-only or full file system."""


class ChangedImagesError(StoreConflictError):
    """A resume whose image files differ in content from those the store was started with."""


class CorruptStoreError(UserError, OSError):
    """Rows the store records as written whose data is gone or fails its
    checksum: the message names the layer, the rows and the file."""
