"""Errors a user can act on. The CLI prints their message as one line, no traceback.

Library callers can catch the specific kinds below; each is a :class:`UserError`.
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


class BadOptionError(UserError):
    """An option out of range or not one of its choices."""


class UnknownModelError(UserError):
    """A model or weights name that no source knows."""


class UnknownModuleError(UserError):
    """A module name the model does not have, or one that cannot be stored."""


class BadImagesError(UserError):
    """The image folder is missing, empty, mixed, or holds unreadable images."""


class StoreConflictError(UserError):
    """The out path holds something else: another run's store, files, or other shards."""


class StoreNotFoundError(UserError):
    """No store (or not an actstore store) where one is expected."""


class IncompleteStoreError(UserError):
    """The store still lacks rows that this operation needs."""


class OutOfSpaceError(UserError):
    """Not enough free space for the store; what was written is kept."""


class Interrupted(UserError):
    """Ctrl-C: what was finished is kept; rerunning the command resumes."""


class StoreBusyError(StoreConflictError):
    """Another live process is writing the store (or the same shard of it)."""


class CorruptStoreError(UserError, OSError):
    """Rows the store records as written whose data is gone or fails its
    checksum: the message names the layer, the rows and the file."""
