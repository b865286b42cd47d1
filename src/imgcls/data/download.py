"""Fetch dataset archives robustly: resumable downloads and atomic extraction.

Dataset archives are tens of megabytes and networks fail: a broken transfer is resumed
with an HTTP ``Range`` request instead of starting over, and a dataset folder only ever
appears in the cache complete, so a crash or Ctrl-C never leaves half a dataset that
later looks valid. Every failure the user can act on is a :class:`DataError` saying what
to do, including how to work on a machine without internet access.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from imgcls.errors import DataError
from imgcls.progress import progress_bar

_CHUNK = 1 << 16
_USER_AGENT = "imgcls (python urllib)"
# Errors that mean the transfer itself failed (refused, reset, timed out, DNS, protocol).
_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


def cache_dir() -> Path:
    """Where downloads are kept: ``$IMGCLS_CACHE`` if set (tests, shared disks), else ``~/.cache/imgcls``."""
    env = os.environ.get("IMGCLS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "imgcls"


def download_file(
    url: str, dest: Path, *, progress: bool = True, timeout: float = 30, advice: str | None = None
) -> Path:
    """Download ``url`` to ``dest``, resuming an earlier partial download, and return ``dest``.

    Data goes to ``dest`` + ``.part`` and is renamed to ``dest`` only when complete, so an
    existing ``dest`` is always a whole file; a failed transfer keeps the ``.part`` so the
    next call continues where it stopped instead of starting over.
    """
    dest = Path(dest)
    advice = advice or (
        f"Download {url} on a machine with internet access and copy it to {dest}; for a dataset "
        "archive you can instead extract it and pass `--data DIR` with the extracted folder, or put "
        "the extracted folder under the directory named by the IMGCLS_DATA environment variable."
    )
    return _download(url, dest, progress=progress, timeout=timeout, advice=advice)


def download_and_extract(url: str, folder_name: str, root: Path | None = None, *, progress: bool = True) -> Path:
    """Return ``root/folder_name``, downloading and extracting the zip at ``url`` if it is missing.

    An existing folder is returned without touching the network. Extraction happens in a
    hidden ``.tmp-*`` sibling and the finished folder is moved into place with one rename,
    so ``root/folder_name`` is never half-extracted; leftovers of an interrupted run are
    removed on the next call. A zip already at ``root/<zip name>`` (an earlier download, or
    one copied there by hand) is used instead of downloading again.
    """
    root = Path(root) if root is not None else cache_dir() / "datasets"
    target = root / folder_name
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(root, folder_name)

    zip_path = root / _zip_name(url, folder_name)
    if not zip_path.is_file():
        advice = (
            f"Download {url} on a machine with internet access, extract it, and either pass "
            f"`--data DIR` with the extracted `{folder_name}` folder (or the folder containing it), "
            f"or put it at $IMGCLS_DATA/{folder_name} (set the IMGCLS_DATA environment variable); "
            f"you can also copy the zip itself to {zip_path}."
        )
        _download(url, zip_path, progress=progress, timeout=30, advice=advice)

    _extract_atomically(zip_path, folder_name, target)
    zip_path.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- download


def _download(url: str, dest: Path, *, progress: bool, timeout: float, advice: str) -> Path:
    """Shared by the public helpers so each can give advice that fits what is being fetched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    # Two rounds at most: a resume the server cannot honour falls back to one fresh download.
    for _ in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        response = _open(url, offset, timeout, advice)
        if response is None:  # 416: the partial file does not fit the remote one
            part.unlink(missing_ok=True)
            continue
        with response:
            if offset and response.status == 206 and _range_start(response) != offset:
                part.unlink(missing_ok=True)  # a range we did not ask for: unusable
                continue
            if response.status != 206:
                offset = 0  # server ignored Range (200): it sends the whole file, start over
            _stream(response, url, part, offset, progress=progress, name=dest.name)
        os.replace(part, dest)
        return dest
    raise DataError(
        f"Could not resume the download of {url}: the server rejected the partial file {part} twice. "
        "Run the command again to start from scratch."
    )


def _open(url: str, offset: int, timeout: float, advice: str) -> http.client.HTTPResponse | None:
    """Send the request (with ``Range`` when resuming); ``None`` means 416 for the resume offset."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return None
        raise DataError(
            f"Could not download {url}: the server answered HTTP {exc.code} {exc.reason}. "
            f"The file may have moved or the server may be down. {advice}"
        ) from exc
    except _NETWORK_ERRORS as exc:
        raise DataError(_offline_message(url, exc, advice)) from exc


def _offline_message(url: str, exc: BaseException, advice: str) -> str:
    """One paragraph: what failed, the likely cause (no network), and the way around it."""
    reason = getattr(exc, "reason", None) or exc
    host = urllib.parse.urlparse(url).hostname or url
    return (
        f"Could not download {url} ({reason}). This machine seems to be offline, or {host} cannot be "
        f"reached from it. {advice}"
    )


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """First byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    match = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _stream(
    response: http.client.HTTPResponse, url: str, part: Path, offset: int, *, progress: bool, name: str
) -> None:
    """Append the body to ``part`` (or rewrite it when ``offset`` is 0) and check the length."""
    length = response.headers.get("Content-Length", "").strip()
    expected = offset + int(length) if length.isdigit() else None
    done = offset
    with (
        open(part, "ab" if offset else "wb") as out,
        progress_bar(progress, name, expected, offset, unit="bytes") as advance,
    ):
        while True:
            try:
                chunk = response.read(_CHUNK)
            except _NETWORK_ERRORS as exc:
                raise DataError(
                    f"The download of {url} broke off after {done} bytes ({exc}). The partial file "
                    f"{part} was kept: run the command again to resume."
                ) from exc
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            advance(len(chunk))
    if expected is not None and done != expected:
        raise DataError(
            f"The download of {url} stopped after {done} of {expected} bytes (connection closed early). "
            f"The partial file {part} was kept: run the command again to resume."
        )


# --------------------------------------------------------------------------- extract


def _zip_name(url: str, folder_name: str) -> str:
    """The archive's file name from the URL, so a hand-copied zip of the same name is found."""
    name = PurePosixPath(urllib.parse.urlparse(url).path).name
    return name if name not in ("", ".", "..") else f"{folder_name}.zip"


def _remove_stale_tmp_dirs(root: Path, folder_name: str) -> None:
    """Delete ``.tmp-<folder>-*`` left by an extraction that was killed before it finished."""
    prefix = f".tmp-{folder_name}-"
    for entry in root.iterdir():
        if entry.name.startswith(prefix) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _is_unsafe_member(name: str) -> bool:
    """True for paths that would land outside the extraction dir (zip-slip): absolute or with ``..``."""
    normalized = name.replace("\\", "/")
    return (
        normalized.startswith("/")
        or re.match(r"[A-Za-z]:", normalized) is not None
        or ".." in PurePosixPath(normalized).parts
    )


def _extract_atomically(zip_path: Path, folder_name: str, target: Path) -> None:
    """Check ``zip_path`` and extract it into a temp sibling, then rename its folder to ``target``."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            unsafe = [name for name in archive.namelist() if _is_unsafe_member(name)]
            if unsafe:
                zip_path.unlink(missing_ok=True)
                raise DataError(
                    f"Refusing to extract {zip_path}: it contains unsafe paths that would be written "
                    f"outside the dataset folder (e.g. {unsafe[0]!r}). The archive was deleted."
                )
            bad_member = archive.testzip()
            if bad_member is not None:
                raise zipfile.BadZipFile(f"member {bad_member!r} is damaged (CRC mismatch)")
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder_name}-", dir=target.parent))
            try:
                for member in archive.infolist():  # member by member: interruptible, observable
                    archive.extract(member, tmp)
                extracted = tmp / folder_name
                if not extracted.is_dir():
                    raise DataError(
                        f"{zip_path} does not contain the expected folder {folder_name!r}; "
                        "it is not the archive this dataset needs."
                    )
                try:
                    os.replace(extracted, target)
                except OSError:
                    if not target.is_dir():  # not just a concurrent run that finished first
                        raise
            except OSError as exc:
                raise DataError(f"Could not extract {zip_path} into {target.parent}: {exc}") from exc
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        zip_path.unlink(missing_ok=True)
        raise DataError(
            f"{zip_path} is not a valid zip archive ({exc}); the download was probably corrupted. "
            "The file was deleted, so running the command again downloads it afresh."
        ) from exc
