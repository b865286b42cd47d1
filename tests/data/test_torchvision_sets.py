"""MNIST, Fashion-MNIST, CIFAR-10/100 through torchvision: tiny copies in the real formats (IDX files,
gzipped or not, and CIFAR pickle batches) written by the tests, read from --data-root or
$IMGCLS_DATA, or downloaded from a local HTTP server; materialised once as PNG class folders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import pickle
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd
from PIL import Image
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.data.builtin import is_builtin, resolve_builtin
from imgcls.data.discover import discover
from imgcls.data.torchvision_sets import (
    SOURCE_FILE,
    TORCHVISION_DATASETS,
    class_folder_names,
    expected_files,
    resolve_torchvision,
)
from imgcls.errors import DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- files in the real formats


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (big-endian header: 0, 0, type 0x08 = uint8, rank; then each dimension; then the bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def gray_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 28, 28) noise whose top-left pixel encodes the label, so content and label can be checked."""
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels * 20
    return images


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, seed: int = 0) -> dict:
    """MNIST-format files in `folder`; returns the arrays written (for checking the PNGs)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(count) % 10 if count >= 10 else rng.integers(0, 10, count)
        rng.shuffle(labels)
        arrays[prefix] = (gray_images(labels, seed + count), labels)
        for kind, array in (("images-idx3", arrays[prefix][0]), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            folder.mkdir(parents=True, exist_ok=True)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


def write_cifar(folder: Path, hundred: bool = False, per_batch: int = 12, seed: int = 0) -> dict:
    """CIFAR python batches in `folder` (the standard format is a pickled dict; writing it here is the
    only way to have a real file of that format). Returns the written (N, 32, 32, 3) arrays and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = 100 if hundred else 10
    label_key = "fine_labels" if hundred else "labels"
    batches = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for index, name in enumerate(batches):
        labels = rng.integers(0, n_classes, per_batch)
        labels[: min(per_batch, n_classes)] = np.arange(min(per_batch, n_classes))
        hwc = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        hwc[:, 0, 0, 0] = labels
        chw_rows = hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # CIFAR rows: all R, then G, then B
        entry = {"batch_label": f"batch {index}", label_key: labels.tolist(), "data": chw_rows}
        if hundred:
            entry["coarse_labels"] = (labels // 5).tolist()
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = (hwc, labels)
    if hundred:
        meta = {"fine_label_names": [f"fine_{i:02d}" for i in range(100)], "coarse_label_names": list("abcdefghij")}
        (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    else:
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_NAMES}, protocol=2))
    return written


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust_cifar_files(monkeypatch: pytest.MonkeyPatch, cls: type, folder: Path) -> None:
    """torchvision checks every CIFAR file against the official MD5s: give it the test files' own."""
    monkeypatch.setattr(cls, "train_list", [[name, md5(folder / name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5(folder / name)] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(cache: Path) -> list[str]:
    root = cache / "datasets"
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".download-"))) if root.exists() else []


def png_name(index: int, total: int) -> str:
    """`<index>.png`, zero-padded to the width of the split's largest index (so names sort in order)."""
    return f"{index:0{len(str(total - 1))}d}.png"


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image)


# --------------------------------------------------------------------------- a local HTTP server


class FileServer(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[str]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    """Serves tmp_path/www over HTTP on a free port; `server.requests` lists the paths asked for."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = FileServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def closed_port_url(path: str = "/") -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing may touch ~/.cache, a real $IMGCLS_DATA or the network: downloads go to a closed port."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGCLS_DATA", raising=False)
    monkeypatch.setattr(tvd.MNIST, "mirrors", [closed_port_url("/mnist/")])
    monkeypatch.setattr(tvd.FashionMNIST, "mirrors", [closed_port_url("/fashion/")])
    monkeypatch.setattr(tvd.CIFAR10, "url", closed_port_url("/cifar-10-python.tar.gz"))
    monkeypatch.setattr(tvd.CIFAR100, "url", closed_port_url("/cifar-100-python.tar.gz"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- registry


def test_registry_names_real_torchvision_classes() -> None:
    assert set(TORCHVISION_DATASETS) == {"mnist", "fashion-mnist", "cifar10", "cifar100"}
    for name, entry in TORCHVISION_DATASETS.items():
        assert is_builtin(name)
        assert entry.dataset_class() is getattr(tvd, entry.class_name)
        assert entry.description
    assert [str(p) for p in expected_files(TORCHVISION_DATASETS["mnist"])] == [f"MNIST/raw/{f}" for f in MNIST_FILES]
    assert "cifar-100-python/meta" in [str(p) for p in expected_files(TORCHVISION_DATASETS["cifar100"])]


def test_class_folder_names_are_safe_and_unique() -> None:
    assert class_folder_names(tvd.FashionMNIST.classes)[0] == "T-shirt_top"
    assert class_folder_names(["a/b", "a\\b", " .hidden", "ok", ""]) == ["a_b", "a_b_1", "hidden", "ok", "class_4"]


def test_unknown_builtin_lists_the_new_names() -> None:
    with pytest.raises(DataError, match="cifar100.*fashion-mnist.*mnist"):
        resolve_builtin("mnist2")


# --------------------------------------------------------------------------- MNIST from --data-root


def test_mnist_from_data_root_gz(tmp_path: Path, cache: Path) -> None:
    user = tmp_path / "user"
    arrays = write_mnist(user / "MNIST" / "raw", gz=True)
    before = tree(user)

    folder = resolve_builtin("mnist", user, progress=False)

    assert folder.parent == cache / "datasets" and folder.name.startswith("mnist-")
    names = class_folder_names(tvd.MNIST.classes)
    assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(names)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[prefix]
        pngs = sorted((folder / split).rglob("*.png"))
        assert len(pngs) == len(labels)
        for index in (0, len(labels) - 1):
            path = folder / split / names[labels[index]] / png_name(index, len(labels))
            np.testing.assert_array_equal(png_pixels(path), images[index])  # lossless, mode L
    source = json.loads((folder / SOURCE_FILE).read_text())
    assert source["counts"]["test"] == {name: 1 for name in names}
    assert tree(user) == before  # the user's copy is read, never written
    assert leftovers(cache) == []


def test_second_resolve_reuses_the_folder(tmp_path: Path) -> None:
    write_mnist(tmp_path / "user" / "MNIST" / "raw")
    first = resolve_torchvision("mnist", tmp_path / "user", progress=False)
    stamp = (first / "train").stat().st_mtime_ns
    assert resolve_torchvision("mnist", tmp_path / "user", progress=False) == first
    assert (first / "train").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("where", ["MNIST", "MNIST/raw", "loose"])
def test_data_root_may_point_inside_the_layout(tmp_path: Path, where: str) -> None:
    files = tmp_path / "user" / ("MNIST/raw" if where != "loose" else "")
    write_mnist(files, gz=False)
    root = tmp_path / "user" / ("" if where == "loose" else where)
    folder = resolve_torchvision("mnist", root, progress=False)
    assert len(list((folder / "test").rglob("*.png"))) == 10


def test_fashion_mnist_class_folders(tmp_path: Path) -> None:
    write_mnist(tmp_path / "keras" / "fashion-mnist", gz=True)  # Keras' ~/.keras/datasets/fashion-mnist
    folder = resolve_builtin("fashion-mnist", tmp_path / "keras" / "fashion-mnist", progress=False)
    assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(
        ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    )


def test_changed_copy_is_materialised_again(tmp_path: Path) -> None:
    raw = tmp_path / "user" / "MNIST" / "raw"
    write_mnist(raw, seed=0)
    first = resolve_torchvision("mnist", tmp_path / "user", progress=False)
    old = tree(first)
    arrays = write_mnist(raw, seed=5)  # same names, new content
    second = resolve_torchvision("mnist", tmp_path / "user", progress=False)
    assert second != first
    assert tree(first) == old  # runs trained on the first copy keep their files
    images, labels = arrays["t10k"]
    name = class_folder_names(tvd.MNIST.classes)[labels[0]]
    np.testing.assert_array_equal(png_pixels(second / "test" / name / "0.png"), images[0])


@pytest.mark.parametrize("case", ["missing_dir", "empty", "one_file_missing"])
def test_data_root_without_the_files_is_an_error_not_a_download(
    tmp_path: Path, cache: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(tvd.MNIST, "mirrors", [server.url("/mnist/")])
    user = tmp_path / "user"
    if case == "empty":
        user.mkdir()
    elif case == "one_file_missing":
        write_mnist(user / "MNIST" / "raw")
        (user / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        resolve_torchvision("mnist", user, progress=False)
    message = str(info.value)
    assert f"--data-root {user}" in message
    assert "MNIST/raw" in message and "nothing is downloaded" in message
    if case == "one_file_missing":
        assert "missing: t10k-labels-idx1-ubyte" in message
    assert server.requests == []
    assert not any(p.is_dir() for p in (cache / "datasets").glob("mnist*"))


@pytest.mark.parametrize("damage", ["bad_gzip", "bad_magic", "labels_short"])
def test_damaged_mnist_files_are_a_clear_error(tmp_path: Path, cache: Path, damage: str) -> None:
    raw = tmp_path / "user" / "MNIST" / "raw"
    write_mnist(raw)
    if damage == "bad_gzip":
        packed = (raw / "train-images-idx3-ubyte.gz").read_bytes()
        (raw / "train-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    elif damage == "bad_magic":
        (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x07\x09" + b"\x00" * 64))
    else:
        (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5))))
    with pytest.raises(DataError) as info:
        resolve_torchvision("mnist", tmp_path / "user", progress=False)
    if damage == "bad_gzip":
        assert "train-images-idx3-ubyte.gz" in str(info.value)
    else:
        assert "MNIST" in str(info.value) and "corrupt" in str(info.value)
    assert not any(p.is_dir() for p in (cache / "datasets").glob("mnist*"))
    assert leftovers(cache) == []


def test_interrupted_materialisation_leaves_no_folder(tmp_path: Path, cache: Path, monkeypatch) -> None:
    write_mnist(tmp_path / "user" / "MNIST" / "raw")
    real_save = Image.Image.save
    calls = {"n": 0}

    def flaky_save(self: Image.Image, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        resolve_torchvision("mnist", tmp_path / "user", progress=False)
    assert not any(p.is_dir() for p in (cache / "datasets").glob("mnist*"))
    monkeypatch.setattr(Image.Image, "save", real_save)
    folder = resolve_torchvision("mnist", tmp_path / "user", progress=False)
    assert len(list(folder.rglob("*.png"))) == 40
    assert leftovers(cache) == []


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_from_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = tmp_path / "user" / "cifar-10-batches-py"
    written = write_cifar(batches)
    trust_cifar_files(monkeypatch, tvd.CIFAR10, batches)

    folder = resolve_builtin("cifar10", tmp_path / "user", progress=False)

    assert sorted(p.name for p in (folder / "train").iterdir()) == CIFAR10_NAMES
    assert len(list((folder / "train").rglob("*.png"))) == 5 * 12
    hwc, labels = written["data_batch_2"]
    index = 12 + 3  # data_batch_2 follows the 12 images of data_batch_1
    np.testing.assert_array_equal(
        png_pixels(folder / "train" / CIFAR10_NAMES[labels[3]] / f"{index:02d}.png"), hwc[3]
    )  # RGB, exact: CIFAR's channel-planar rows became HWC pixels
    test_hwc, test_labels = written["test_batch"]
    np.testing.assert_array_equal(png_pixels(folder / "test" / CIFAR10_NAMES[test_labels[0]] / "00.png"), test_hwc[0])


def test_cifar100_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = tmp_path / "cifar-100-python"
    written = write_cifar(batches, hundred=True, per_batch=120)
    trust_cifar_files(monkeypatch, tvd.CIFAR100, batches)
    folder = resolve_torchvision("cifar100", batches, progress=False)  # the batches folder itself
    assert len([p for p in (folder / "train").iterdir()]) == 100
    hwc, labels = written["test"]
    np.testing.assert_array_equal(png_pixels(folder / "test" / f"fine_{labels[7]:02d}" / "007.png"), hwc[7])


def test_cifar_file_not_matching_its_checksum(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = tmp_path / "user" / "cifar-10-batches-py"
    write_cifar(batches)
    trust_cifar_files(monkeypatch, tvd.CIFAR10, batches)
    (batches / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cifar10.*corrupt"):
        resolve_torchvision("cifar10", tmp_path / "user", progress=False)
    assert not any(p.is_dir() for p in (cache / "datasets").glob("cifar10*"))


# --------------------------------------------------------------------------- download and offline


def test_mnist_download_from_local_server(
    tmp_path: Path, cache: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    www = tmp_path / "www" / "mnist"
    arrays = write_mnist(www, gz=True)
    monkeypatch.setattr(tvd.MNIST, "mirrors", [server.url("/mnist/")])
    monkeypatch.setattr(tvd.MNIST, "resources", [(f"{name}.gz", md5(www / f"{name}.gz")) for name in MNIST_FILES])

    folder = resolve_builtin("mnist", progress=False)

    assert folder == cache / "datasets" / "mnist"
    assert set(server.requests) == {f"/mnist/{name}.gz" for name in MNIST_FILES}  # torchvision asks twice
    asked = len(server.requests)
    images, labels = arrays["train"]
    name = class_folder_names(tvd.MNIST.classes)[labels[4]]
    np.testing.assert_array_equal(png_pixels(folder / "train" / name / "04.png"), images[4])
    assert json.loads((folder / SOURCE_FILE).read_text())["source"] == "torchvision download"
    assert leftovers(cache) == []  # the downloaded files are gone: the PNG folder is the cached copy
    assert resolve_builtin("mnist", progress=False) == folder
    assert len(server.requests) == asked  # no second download


def test_cifar10_download_from_local_server(
    tmp_path: Path, cache: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = tmp_path / "src" / "cifar-10-batches-py"
    written = write_cifar(batches)
    trust_cifar_files(monkeypatch, tvd.CIFAR10, batches)
    archive = tmp_path / "www" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    monkeypatch.setattr(tvd.CIFAR10, "url", server.url("/cifar-10-python.tar.gz"))
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5(archive))

    folder = resolve_torchvision("cifar10", progress=False)

    assert folder == cache / "datasets" / "cifar10"
    hwc, labels = written["test_batch"]
    np.testing.assert_array_equal(png_pixels(folder / "test" / CIFAR10_NAMES[labels[5]] / "05.png"), hwc[5])
    assert leftovers(cache) == []


def test_corrupt_download_is_a_clear_error(
    tmp_path: Path, cache: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    www = tmp_path / "www" / "mnist"
    write_mnist(www)
    monkeypatch.setattr(tvd.MNIST, "mirrors", [server.url("/mnist/")])
    monkeypatch.setattr(tvd.MNIST, "resources", [(f"{name}.gz", "0" * 32) for name in MNIST_FILES])  # wrong MD5
    with pytest.raises(DataError, match="Could not download the mnist dataset") as info:
        resolve_torchvision("mnist", progress=False)
    assert "did not match their checksums" in str(info.value) and "offline" not in str(info.value)
    assert not (cache / "datasets" / "mnist").exists()


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_offline_message(cache: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError) as info:
        resolve_torchvision(name, progress=False)
    message = str(info.value)
    assert "\n" not in message  # one paragraph
    assert f"Could not download the {name} dataset" in message and "offline" in message
    assert "--data-root DIR" in message and "IMGCLS_DATA" in message
    assert ("DIR/MNIST/raw/" if name == "mnist" else "DIR/cifar-10-batches-py/") in message
    assert "127.0.0.1" in message  # where it tried
    assert not (cache / "datasets" / name).exists()
    assert capsys.readouterr().out == ""  # stdout stays clean for --json


def test_imgcls_data_env(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path / "shared" / "MNIST" / "raw")
    write_mnist(tmp_path / "loose")  # files without the layout: ambiguous (MNIST or Fashion-MNIST?)
    monkeypatch.setenv("IMGCLS_DATA", str(tmp_path / "shared"))
    folder = resolve_torchvision("mnist", progress=False)
    assert folder.name.startswith("mnist-")
    monkeypatch.setenv("IMGCLS_DATA", str(tmp_path / "loose"))
    with pytest.raises(DataError, match="offline"):
        resolve_torchvision("mnist", progress=False)


# --------------------------------------------------------------------------- through discover and the CLI


def test_discover_keeps_the_official_test_split(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "user" / "MNIST" / "raw", n_train=50, n_test=20)
    dataset = discover("mnist", val_split=0.2, seed=3, data_dir=tmp_path / "user", progress=False)
    assert dataset.classes == class_folder_names(tvd.MNIST.classes)
    assert len(dataset.splits["test"]) == 20
    assert len(dataset.splits["train"]) + len(dataset.splits["val"]) == 50
    assert len(dataset.splits["val"]) == 10  # one per class: stratified 20% of 5 per class
    assert dataset.source == "val_split=0.2,seed=3"
    test_labels = [s.label for s in sorted(dataset.splits["test"], key=lambda s: s.path.name)]
    assert test_labels == arrays["t10k"][1].tolist()


def test_data_check_cli_with_data_root(tmp_path: Path) -> None:
    write_mnist(tmp_path / "user" / "MNIST" / "raw", n_train=40, n_test=10)
    result = CliRunner().invoke(app, ["data", "check", "mnist", "--data-root", str(tmp_path / "user"), "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert report["n_images"] == 50
    assert report["splits"]["test"]["n_images"] == 10
    assert report["formats"] == {"PNG": 50}
    assert report["unreadable"] == []


def test_data_root_option_on_train_and_check(tmp_path: Path) -> None:
    for command in (["train", "fashion-mnist", "--recipe", "seed-basic-cnn"], ["data", "check", "fashion-mnist"]):
        result = CliRunner().invoke(app, [*command, "--data-root", str(tmp_path / "nothing")])
        assert isinstance(result.exception, DataError), result.output  # main() prints it as one line
        assert "--data-root" in str(result.exception) and "FashionMNIST/raw" in str(result.exception)
