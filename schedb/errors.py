"""The one exception type that the CLI turns into a clean message and a non-zero exit, and
file names of any bytes made printable for its messages."""


class SchedbError(Exception):
    """A user-facing error: bad input, a bad spec, a file that is not what it claims."""


class StorageError(SchedbError):
    """The database cannot be written at all (a full disk, a read-only file): every further
    write would fail the same way."""


def printable(name: str | bytes) -> str:
    """A file name (or a message holding one) as text: bytes that are not UTF-8 (on Linux a
    name is any bytes; Python holds them as lone surrogates) shown as ``\\xNN``."""
    raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")
