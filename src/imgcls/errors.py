"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class ImgclsError(Exception):
    """A problem the user can fix (bad data, missing file, offline); the message says how."""


class DataError(ImgclsError):
    """The data given cannot be used: names the file or folder and the problem."""


def first_line(error: BaseException) -> str:
    """An exception's message in one line for ours ("... (reason)"); its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
