"""The one exception type that the CLI turns into a clean message and a non-zero exit."""


class SchedbError(Exception):
    """A user-facing error: bad input, a bad spec, a file that is not what it claims."""
