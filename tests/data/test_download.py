"""Download/extract robustness against a real local HTTP server (resume, broken servers, bad zips, offline)."""

from __future__ import annotations

import dataclasses
import io
import random
import re
import socket
import struct
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from imgcls.data import builtin
from imgcls.data.builtin import BUILTIN_DATASETS, BuiltinDataset, is_builtin, resolve_builtin
from imgcls.data.download import cache_dir, download_and_extract, download_file
from imgcls.errors import DataError

FOLDER = "cats_and_dogs_filtered"
ZIP_PATH = f"/{FOLDER}.zip"


# --------------------------------------------------------------------------- fixtures


def _jpeg(seed: int) -> bytes:
    """A tiny noisy JPEG (noise so the zip does not compress to almost nothing)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (16, 16))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(256)])
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def _dataset_files() -> dict[str, bytes]:
    files = {}
    for split, start in (("train", 0), ("validation", 2000)):
        for label in ("cats", "dogs"):
            for i in range(start, start + 3):
                files[f"{FOLDER}/{split}/{label}/{label[:-1]}.{i}.jpg"] = _jpeg(len(files))
    return files


def _make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _Server(ThreadingHTTPServer):
    """Serves ``files``; records each request; can misbehave on request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status sent)
        self.drop_after: int | None = None  # send only this many body bytes once, then hang up
        self.ignore_range = False  # answer 200 with the whole file even when Range is asked

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence per-request logging
        pass

    def do_GET(self) -> None:  # name fixed by http.server
        server = self.server
        range_header = self.headers.get("Range")
        data = server.files.get(self.path)
        if data is None:
            server.requests.append((self.path, range_header, 404))
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                server.requests.append((self.path, range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, body = 206, data[start:]
        else:
            status, body = 200, data
        server.requests.append((self.path, range_header, status))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        if server.drop_after is not None:
            body, server.drop_after = body[: server.drop_after], None
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing may touch ~/.cache or a real $IMGCLS_DATA."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGCLS_DATA", raising=False)


@pytest.fixture(scope="module")
def dataset_files() -> dict[str, bytes]:
    return _dataset_files()


@pytest.fixture(scope="module")
def dataset_zip(dataset_files: dict[str, bytes]) -> bytes:
    return _make_zip(dataset_files)


@pytest.fixture
def server(dataset_zip: bytes) -> Iterator[_Server]:
    srv = _Server()
    srv.files[ZIP_PATH] = dataset_zip
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def local_registry(monkeypatch: pytest.MonkeyPatch, server: _Server) -> BuiltinDataset:
    """Point the cats-vs-dogs entry at the local server."""
    local = dataclasses.replace(BUILTIN_DATASETS["cats-vs-dogs"], url=server.url(ZIP_PATH))
    monkeypatch.setitem(BUILTIN_DATASETS, "cats-vs-dogs", local)
    return local


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{ZIP_PATH}"


def _assert_tree(folder: Path, files: dict[str, bytes]) -> None:
    found = {p.relative_to(folder.parent).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert found == files


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp-") or p.suffix in (".part", ".zip"))


# --------------------------------------------------------------------------- cache_dir


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("IMGCLS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "imgcls"


# --------------------------------------------------------------------------- download_file


def test_download_file_writes_dest_and_no_part(server: _Server, dataset_zip: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "a.zip"
    assert download_file(server.url(ZIP_PATH), dest, progress=False) == dest
    assert dest.read_bytes() == dataset_zip
    assert not dest.with_name("a.zip.part").exists()
    assert server.requests == [(ZIP_PATH, None, 200)]


def test_download_file_with_progress_bar(server: _Server, dataset_zip: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    download_file(server.url(ZIP_PATH), dest, progress=True)
    assert dest.read_bytes() == dataset_zip


def test_resume_after_interrupted_transfer(server: _Server, dataset_zip: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    part = tmp_path / "a.zip.part"
    cut = len(dataset_zip) // 2
    server.drop_after = cut

    with pytest.raises(DataError, match="resume"):
        download_file(server.url(ZIP_PATH), dest, progress=False)
    assert not dest.exists()
    assert part.read_bytes() == dataset_zip[:cut]

    download_file(server.url(ZIP_PATH), dest, progress=False)
    assert dest.read_bytes() == dataset_zip
    assert not part.exists()
    assert server.requests == [(ZIP_PATH, None, 200), (ZIP_PATH, f"bytes={cut}-", 206)]


def test_server_ignoring_range_restarts_from_zero(server: _Server, dataset_zip: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    # A stale partial file whose bytes are wrong: appending to it would corrupt the result.
    (tmp_path / "a.zip.part").write_bytes(b"garbage!" * 100)
    server.ignore_range = True

    download_file(server.url(ZIP_PATH), dest, progress=False)
    assert dest.read_bytes() == dataset_zip
    assert server.requests == [(ZIP_PATH, "bytes=800-", 200)]


def test_interrupted_then_server_ignores_range(server: _Server, dataset_zip: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    server.drop_after = 100
    with pytest.raises(DataError):
        download_file(server.url(ZIP_PATH), dest, progress=False)
    server.ignore_range = True
    download_file(server.url(ZIP_PATH), dest, progress=False)
    assert dest.read_bytes() == dataset_zip


def test_part_larger_than_file_gets_416_and_restarts(server: _Server, dataset_zip: bytes, tmp_path: Path) -> None:
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"x" * (len(dataset_zip) + 10))
    download_file(server.url(ZIP_PATH), dest, progress=False)
    assert dest.read_bytes() == dataset_zip
    assert [status for _, _, status in server.requests] == [416, 200]


def test_http_404_names_url_and_status(server: _Server, tmp_path: Path) -> None:
    url = server.url("/missing.zip")
    with pytest.raises(DataError) as info:
        download_file(url, tmp_path / "m.zip", progress=False)
    assert url in str(info.value)
    assert "404" in str(info.value)
    assert not (tmp_path / "m.zip").exists()


def test_offline_download_file(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(DataError) as info:
        download_file(url, tmp_path / "a.zip", progress=False, timeout=5)
    message = str(info.value)
    assert url in message
    assert "offline" in message
    assert "--data" in message and "IMGCLS_DATA" in message


# --------------------------------------------------------------------------- download_and_extract


def test_download_and_extract(server: _Server, dataset_files: dict[str, bytes], tmp_path: Path) -> None:
    folder = download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    root = tmp_path / "cache" / "datasets"
    assert folder == root / FOLDER
    _assert_tree(folder, dataset_files)
    with Image.open(folder / "train" / "cats" / "cat.0.jpg") as image:
        assert image.size == (16, 16)
    assert _leftovers(root) == []  # zip removed, no .part, no .tmp-*


def test_second_call_uses_folder_without_network(server: _Server, tmp_path: Path) -> None:
    first = download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    assert len(server.requests) == 1
    second = download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    assert second == first
    assert len(server.requests) == 1


def test_explicit_root(server: _Server, dataset_files: dict[str, bytes], tmp_path: Path) -> None:
    folder = download_and_extract(server.url(ZIP_PATH), FOLDER, tmp_path / "elsewhere", progress=False)
    assert folder == tmp_path / "elsewhere" / FOLDER
    _assert_tree(folder, dataset_files)
    assert not (tmp_path / "cache").exists()


def test_resume_through_download_and_extract(server: _Server, dataset_files: dict[str, bytes], tmp_path: Path) -> None:
    server.drop_after = 1000
    with pytest.raises(DataError):
        download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    root = tmp_path / "cache" / "datasets"
    assert not (root / FOLDER).exists()
    assert (root / f"{FOLDER}.zip.part").stat().st_size == 1000

    folder = download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    _assert_tree(folder, dataset_files)
    assert server.requests[-1][1:] == ("bytes=1000-", 206)


def _flip_byte_in_first_member(data: bytes) -> bytes:
    """Damage the compressed data of the first member (headers stay valid, CRC no longer matches)."""
    name_len, extra_len = struct.unpack("<HH", data[26:30])
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    pos = 30 + name_len + extra_len + info.compress_size // 2
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped_byte"])
def test_corrupt_zip(server: _Server, dataset_zip: bytes, tmp_path: Path, damage: str) -> None:
    bad = {
        "garbage": b"<html>not a zip</html>" * 50,
        "truncated": dataset_zip[: len(dataset_zip) - 40],
        "flipped_byte": _flip_byte_in_first_member(dataset_zip),
    }[damage]
    server.files["/bad.zip"] = bad
    root = tmp_path / "cache" / "datasets"
    with pytest.raises(DataError) as info:
        download_and_extract(server.url("/bad.zip"), FOLDER, progress=False)
    assert str(root / "bad.zip") in str(info.value)
    assert not (root / FOLDER).exists()
    assert _leftovers(root) == []  # zip deleted so the next try downloads again

    server.files["/bad.zip"] = dataset_zip
    download_and_extract(server.url("/bad.zip"), FOLDER, progress=False)
    assert (root / FOLDER / "train" / "dogs" / "dog.0.jpg").is_file()
    assert len(server.requests) == 2


@pytest.mark.parametrize("evil", ["../evil.txt", f"{FOLDER}/../../evil.txt", "/tmp/imgcls-evil.txt", "C:/evil.txt"])
def test_zip_slip_rejected(server: _Server, dataset_files: dict[str, bytes], tmp_path: Path, evil: str) -> None:
    server.files["/evil.zip"] = _make_zip({**dataset_files, evil: b"pwned"})
    root = tmp_path / "cache" / "datasets"
    with pytest.raises(DataError, match="unsafe"):
        download_and_extract(server.url("/evil.zip"), FOLDER, progress=False)
    assert not (root / FOLDER).exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not Path("/tmp/imgcls-evil.txt").exists()
    assert _leftovers(root) == []


def test_archive_without_expected_folder(server: _Server, tmp_path: Path) -> None:
    server.files["/other.zip"] = _make_zip({"something_else/a.txt": b"a"})
    with pytest.raises(DataError, match=FOLDER):
        download_and_extract(server.url("/other.zip"), FOLDER, progress=False)
    root = tmp_path / "cache" / "datasets"
    assert not (root / FOLDER).exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == []


def test_offline_download_and_extract(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        download_and_extract(_closed_port_url(), FOLDER, progress=False)
    message = str(info.value)
    assert "offline" in message
    assert "--data" in message
    assert f"IMGCLS_DATA/{FOLDER}" in message
    assert not (tmp_path / "cache" / "datasets" / FOLDER).exists()


def test_interrupted_extraction_never_shows_half_folder(
    server: _Server, dataset_files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_extract = zipfile.ZipFile.extract
    calls = {"n": 0}
    seen_target: list[bool] = []
    root = tmp_path / "cache" / "datasets"

    def flaky_extract(self: zipfile.ZipFile, member: object, path: object = None, pwd: object = None) -> str:
        calls["n"] += 1
        seen_target.append((root / FOLDER).exists())
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", flaky_extract)
    with pytest.raises(KeyboardInterrupt):
        download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    assert seen_target == [False] * 4
    assert not (root / FOLDER).exists()

    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
    folder = download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    _assert_tree(folder, dataset_files)
    assert len(server.requests) == 1  # the downloaded zip was reused, not fetched again


def test_stale_tmp_dir_is_cleaned_up(server: _Server, dataset_files: dict[str, bytes], tmp_path: Path) -> None:
    root = tmp_path / "cache" / "datasets"
    stale = root / f".tmp-{FOLDER}-abc123" / FOLDER / "train"
    stale.mkdir(parents=True)
    (stale / "half.jpg").write_bytes(b"half")
    unrelated = root / ".tmp-otherdata-xyz"
    unrelated.mkdir()

    folder = download_and_extract(server.url(ZIP_PATH), FOLDER, progress=False)
    _assert_tree(folder, dataset_files)
    assert not (root / f".tmp-{FOLDER}-abc123").exists()
    assert unrelated.exists()


def test_hand_copied_zip_is_used_without_network(
    dataset_zip: bytes, dataset_files: dict[str, bytes], tmp_path: Path
) -> None:
    root = tmp_path / "cache" / "datasets"
    root.mkdir(parents=True)
    (root / f"{FOLDER}.zip").write_bytes(dataset_zip)
    folder = download_and_extract(_closed_port_url(), FOLDER, progress=False)
    _assert_tree(folder, dataset_files)


# --------------------------------------------------------------------------- builtin lookup


def _fake_dataset(parent: Path, name: str = FOLDER) -> Path:
    folder = parent / name
    for split in ("train", "validation"):
        for label in ("cats", "dogs"):
            (folder / split / label).mkdir(parents=True)
    return folder


def test_registry_entry() -> None:
    entry = BUILTIN_DATASETS["cats-vs-dogs"]
    assert entry.url == "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
    assert entry.folder_name == FOLDER
    assert entry.description
    assert is_builtin("cats-vs-dogs")
    assert not is_builtin("./my-pictures")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.url = "x"  # type: ignore[misc]


def test_unknown_name_lists_known() -> None:
    with pytest.raises(DataError, match="cats-vs-dogs"):
        resolve_builtin("no-such-dataset")


def test_data_dir_wins_over_env_and_cache(
    local_registry: BuiltinDataset, server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = _fake_dataset(tmp_path / "user")
    env = _fake_dataset(tmp_path / "env")
    _fake_dataset(tmp_path / "cache" / "datasets")
    monkeypatch.setenv("IMGCLS_DATA", str(env.parent))

    assert resolve_builtin("cats-vs-dogs", tmp_path / "user", progress=False) == user  # folder containing it
    assert resolve_builtin("cats-vs-dogs", user, progress=False) == user  # the folder itself
    assert server.requests == []


def test_data_dir_renamed_copy_recognised(local_registry: BuiltinDataset, tmp_path: Path) -> None:
    renamed = _fake_dataset(tmp_path, "my-cats-and-dogs")
    assert resolve_builtin("cats-vs-dogs", renamed, progress=False) == renamed


@pytest.mark.parametrize("kind", ["empty", "missing", "wrong_content"])
def test_data_dir_without_data_is_error_not_download(
    local_registry: BuiltinDataset, server: _Server, tmp_path: Path, kind: str
) -> None:
    data_dir = tmp_path / "user"
    if kind == "empty":
        data_dir.mkdir()
    elif kind == "wrong_content":
        (data_dir / FOLDER / "train").mkdir(parents=True)  # right name, but no cats/dogs inside
    with pytest.raises(DataError, match="--data"):
        resolve_builtin("cats-vs-dogs", data_dir, progress=False)
    assert server.requests == []
    assert not (tmp_path / "cache").exists()


def test_env_wins_over_cache(
    local_registry: BuiltinDataset, server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _fake_dataset(tmp_path / "env")
    _fake_dataset(tmp_path / "cache" / "datasets")
    monkeypatch.setenv("IMGCLS_DATA", str(tmp_path / "env"))
    assert resolve_builtin("cats-vs-dogs", progress=False) == env
    assert server.requests == []


def test_env_without_dataset_falls_back_to_cache(
    local_registry: BuiltinDataset, server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "env").mkdir()
    cached = _fake_dataset(tmp_path / "cache" / "datasets")
    monkeypatch.setenv("IMGCLS_DATA", str(tmp_path / "env"))
    assert resolve_builtin("cats-vs-dogs", progress=False) == cached
    assert server.requests == []


def test_download_when_no_local_copy(
    local_registry: BuiltinDataset, server: _Server, dataset_files: dict[str, bytes], tmp_path: Path
) -> None:
    folder = resolve_builtin("cats-vs-dogs", progress=False)
    assert folder == tmp_path / "cache" / "datasets" / FOLDER
    _assert_tree(folder, dataset_files)
    assert resolve_builtin("cats-vs-dogs", progress=False) == folder
    assert len(server.requests) == 1


def test_resolve_offline_message(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = dataclasses.replace(BUILTIN_DATASETS["cats-vs-dogs"], url=_closed_port_url())
    monkeypatch.setitem(builtin.BUILTIN_DATASETS, "cats-vs-dogs", entry)
    with pytest.raises(DataError) as info:
        resolve_builtin("cats-vs-dogs", progress=False)
    assert "--data" in str(info.value) and "IMGCLS_DATA" in str(info.value)
