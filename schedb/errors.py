"""The one exception type that the CLI turns into a clean message and a non-zero exit."""


class SchedbError(Exception):
    """A user-facing error: bad input, a bad spec, a file that is not what it claims."""


class StorageError(SchedbError):
    """The database cannot be written at all (a full disk, a read-only file): every further
    write would fail the same way."""
