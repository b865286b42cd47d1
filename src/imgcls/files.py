"""Paths as users read them, and files written atomically: the base every layer may use.

Atomic = a temporary file in the same folder, flushed to disk, then renamed over the target, so a
kill, a full disk or a crash at any moment leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError


def display_path(path: Path | str) -> str:
    """A printable path even when the file name is not valid UTF-8."""
    return os.fsdecode(os.fsencode(path)).encode("utf-8", "backslashreplace").decode("utf-8")


def shown_path(path: Path | str, root: Path | str | None) -> str:
    """`path` relative to `root` when it lies inside (short tables and manifests), else as it is."""
    if root is not None:
        with contextlib.suppress(ValueError):
            return display_path(Path(path).relative_to(root))
    return display_path(path)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """A temporary path beside `target` to write to; renamed over `target` when the block succeeds,
    removed when it fails. For writers that want a file name (safetensors, matplotlib, torch.save)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except OSError as error:
        if error.filename in (None, str(temporary), temporary):  # name the file the user knows
            reason = error.strerror or str(error)
            if error.errno in FULL_DISK and target.is_file():  # the file it replaces: about what it needs
                reason += f"; it needs about {readable_size(target.stat().st_size)}"
            raise OSError(error.errno, reason, str(target)) from error
        raise
    finally:
        temporary.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: Path | str, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(target: Path | str, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path | str, value: Any) -> None:
    atomic_write_text(target, json.dumps(value, indent=2) + "\n")


FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def describe_os_error(error: OSError) -> str:
    """'runs/x/checkpoints/last.ckpt: No space left on device (12 MiB free on that disk)': the file,
    the reason, and for a full disk how much room is left."""
    where = display_path(error.filename) if error.filename else "a file"
    text = f"{where}: {error.strerror or error}"
    if error.errno in FULL_DISK and error.filename:
        folder = Path(error.filename).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        with contextlib.suppress(OSError):
            text += f" ({readable_size(shutil.disk_usage(folder).free)} free on that disk)"
    return text


def readable_size(size: int) -> str:
    """'812 KiB', '38.2 MiB', '4.1 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{max(1, round(size / 1024)):,} KiB"


def fresh_dir(parent: Path, name: str) -> Path:
    """A new folder `parent/name` (or `name-2`, `-3`...), created now: `mkdir` is atomic, so two
    processes asking for the same name at once get different folders and nothing existing is reused."""
    parent.mkdir(parents=True, exist_ok=True)
    for index in range(1, 10_000):
        candidate = parent / (name if index == 1 else f"{name}-{index}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ImgclsError(f"{parent}: too many folders named {name}")
