"""The one exception type users see.

Every expected failure (bad input, a missing file, a wrong option) raises `LorakitError`
with a single line that names the file and the fix. The CLI prints it without a stack
trace; anything else is a bug and keeps its traceback.
"""


class LorakitError(Exception):
    """A user-facing error whose message is one line: what is wrong, where, and the fix."""
