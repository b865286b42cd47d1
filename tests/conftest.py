"""Shared test helpers: small synthetic images written to disk in any Pillow mode and format."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# Four clearly different quadrant colours: any rotation or flip moves them to other corners.
QUADRANTS = {"tl": (220, 30, 30), "tr": (30, 200, 40), "bl": (30, 40, 210), "br": (240, 220, 30)}


def pattern(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: four coloured quadrants plus a gentle gradient (JPEG-friendly, shows rotations)."""
    array = np.empty((height, width, 3), dtype=np.float64)
    half_h, half_w = height // 2, width // 2
    array[:half_h, :half_w] = QUADRANTS["tl"]
    array[:half_h, half_w:] = QUADRANTS["tr"]
    array[half_h:, :half_w] = QUADRANTS["bl"]
    array[half_h:, half_w:] = QUADRANTS["br"]
    ramp = np.linspace(-20, 20, width)[None, :, None] + np.linspace(-10, 10, height)[:, None, None]
    return np.clip(array + ramp, 0, 255).astype(np.uint8)


def make_pil(mode: str = "RGB", size: tuple[int, int] = (32, 24)) -> Image.Image:
    """A Pillow image of `size` (width, height) in `mode`, derived from `pattern`."""
    width, height = size
    rgb = Image.fromarray(pattern(width, height), "RGB")
    if mode == "I;16":
        ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
        return Image.fromarray(ramp)
    if mode == "RGBA":
        alpha = np.zeros((height, width), dtype=np.uint8)
        alpha[:, width // 2 :] = 255  # left half fully transparent, right half opaque
        return Image.fromarray(np.dstack([pattern(width, height), alpha]), "RGBA")
    if mode == "LA":
        return make_pil("RGBA", size).convert("LA")
    return rgb.convert(mode)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (32, 24), **save_kwargs) -> Path:
    """Write a `make_pil` image to `path` (format from the suffix unless `format=` is given)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_pil(mode, size).save(path, **save_kwargs)
    return path


def write_tree(root: Path, spec: dict[str, int], suffix: str = ".png") -> dict[str, list[Path]]:
    """Create `root/<class>/img_<i><suffix>` tiny images, `spec` = {class: count}; returns the paths."""
    made: dict[str, list[Path]] = {}
    for name, count in spec.items():
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        made[name] = [write_image(folder / f"img_{i:03d}{suffix}", size=(8, 8)) for i in range(count)]
    return made


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module: on a busy 2-core machine, OpenMP threads spin-waiting for
    a stolen core make small forwards ~50x slower. Restored afterwards. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """`make_image("a/b.png", mode="P", size=(w, h), **save_kwargs)` writes under tmp_path."""

    def make(name: str, mode: str = "RGB", size: tuple[int, int] = (32, 24), **save_kwargs) -> Path:
        return write_image(tmp_path / name, mode, size, **save_kwargs)

    return make


@pytest.fixture
def images() -> SimpleNamespace:
    """The helpers above for test modules (conftest is not imported directly):
    `images.pattern(w, h)`, `images.make_pil(mode, size)`, `images.write(path, mode, size, **kw)`,
    `images.tree(root, {"cats": 3, "dogs": 2})`, `images.QUADRANTS`."""
    return SimpleNamespace(pattern=pattern, make_pil=make_pil, write=write_image, tree=write_tree, QUADRANTS=QUADRANTS)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $IMGCLS_CACHE at a fresh temporary folder so no test touches ~/.cache."""
    folder = tmp_path / "imgcls-cache"
    monkeypatch.setenv("IMGCLS_CACHE", str(folder))
    return folder


# --------------------------------------------------------------------------- real photos (../shared/data)

RUN_DIR_ENV = "IMGCLS_RUN_DIR"  # imgcls.runs.RUN_DIR_ENV, repeated so conftest stays import-light


def shared_data_root() -> Path:
    """$IMGCLS_SHARED_DATA, else `<repo>/../shared/data`."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("IMGCLS_SHARED_DATA") or default)


def _shared_folder(name: str) -> Path:
    folder = shared_data_root() / name
    if not folder.is_dir():
        pytest.skip(f"shared photos not found: {folder} (set IMGCLS_SHARED_DATA)")
    return folder


def link_photos(source: Path, dest: Path, count: int, offset: int = 0) -> list[Path]:
    """Symlink the first `count` (after `offset`) sorted .jpg files of `source` into `dest`."""
    files = sorted(source.glob("*.jpg"))[offset : offset + count]
    if len(files) < count:
        pytest.skip(f"{source}: only {len(files)} photos, the test needs {count}")
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for file in files:
        link = dest / file.name
        link.symlink_to(file)
        made.append(link)
    return made


@pytest.fixture(scope="session")
def cats_vs_dogs_dir() -> Path:
    """`<shared>/cats_vs_dogs` with train/ and val/ of cat/ and dog/ JPEGs (skips when absent)."""
    return _shared_folder("cats_vs_dogs")


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """`<shared>/cifar10_test` with 10 class folders of 32x32 JPEGs (skips when absent)."""
    return _shared_folder("cifar10_test")


@pytest.fixture
def cats_dogs_subset(cats_vs_dogs_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """`cats_dogs_subset(name, train=16, val=8)` -> tmp_path/name with train/{cat,dog}, val/{cat,dog}
    of symlinked photos. `train`/`val` are a count per class or a {class: count} dict; `val=0`
    leaves out val/; `flat=True` puts `train` photos straight into name/{cat,dog}/ (no splits)."""

    def make(name: str = "data", train: int | dict = 16, val: int | dict = 8, flat: bool = False) -> Path:
        return build_cats_dogs(cats_vs_dogs_dir, tmp_path / name, train, val, flat)

    return make


def build_cats_dogs(source: Path, root: Path, train: int | dict = 16, val: int | dict = 8, flat: bool = False) -> Path:
    def per_class(count: int | dict) -> dict[str, int]:
        return count if isinstance(count, dict) else {"cat": count, "dog": count}

    for name, count in per_class(train).items():
        link_photos(source / "train" / name, root / name if flat else root / "train" / name, count)
    if not flat:
        for name, count in per_class(val).items():
            if count:
                link_photos(source / "val" / name, root / "val" / name, count)
    return root


@pytest.fixture
def kaggle_folder(cats_dogs_subset, tmp_path: Path) -> Path:
    """Kaggle's train.zip layout: one flat folder of cat.N.jpg / dog.N.jpg (12 each), plus a stray file."""
    import shutil

    tree = cats_dogs_subset("tree", train=12, val=0, flat=True)
    flat = tmp_path / "kaggle"
    flat.mkdir()
    for name in ("cat", "dog"):
        for number, photo in enumerate(sorted((tree / name).iterdir())):
            shutil.copy(photo, flat / f"{name}.{number}.jpg")
    shutil.copy(flat / "cat.0.jpg", flat / "IMG_2041 copy.jpg")  # a name that says nothing
    return flat


@pytest.fixture
def cifar_subset(cifar10_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """`cifar_subset(name, per_class=10)` -> tmp_path/name/<10 classes>/ (flat layout, no val/)."""

    def make(name: str = "cifar", per_class: int = 10) -> Path:
        root = tmp_path / name
        classes = sorted(p for p in cifar10_dir.iterdir() if p.is_dir())
        for folder in classes:
            link_photos(folder, root / folder.name, per_class)
        return root

    return make


@pytest.fixture
def imgcls_env(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment for training: fresh $IMGCLS_CACHE, no inherited $IMGCLS_RUN_DIR (which
    in-process trainings set); returns a copy of os.environ to pass to subprocesses."""
    monkeypatch.setenv(RUN_DIR_ENV, "")  # so that the undo below removes what training sets later
    monkeypatch.delenv(RUN_DIR_ENV)
    env = dict(os.environ)
    env.pop("LOCAL_RANK", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@contextlib.contextmanager
def _training_env(cache: Path):
    """`cache` as $IMGCLS_CACHE and no inherited $IMGCLS_RUN_DIR, both restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLS_CACHE", str(cache))
        patch.setenv(RUN_DIR_ENV, "")  # so that the undo removes what training sets
        patch.delenv(RUN_DIR_ENV)
        yield patch


@pytest.fixture(scope="session")
def training_env() -> Callable[[Path], contextlib.AbstractContextManager]:
    """`with training_env(cache):` for module and session fixtures that train (imgcls_env is per test)."""
    return _training_env


@pytest.fixture
def add_trainer_callback(monkeypatch: pytest.MonkeyPatch) -> Callable[[object, object], None]:
    """`add_trainer_callback(strategy_module, callback)`: every Trainer that module makes also gets
    `callback` (to interrupt training at a chosen moment); `monkeypatch.undo()` takes it away."""

    def add(module, callback) -> None:
        make_trainer = module.make_trainer

        def with_callback(*args, **kwargs):
            trainer = make_trainer(*args, **kwargs)
            trainer.callbacks.append(callback)
            return trainer

        monkeypatch.setattr(module, "make_trainer", with_callback)

    return add


@pytest.fixture(scope="session")
def cats_dogs_tree(cats_vs_dogs_dir: Path) -> Callable[..., Path]:
    """Session-scoped `cats_dogs_tree(root, train=16, val=8, flat=False)` for module fixtures."""

    def make(root: Path, train: int | dict = 16, val: int | dict = 8, flat: bool = False) -> Path:
        return build_cats_dogs(cats_vs_dogs_dir, root, train, val, flat)

    return make


@pytest.fixture(scope="session")
def tiny_runs(cats_dogs_tree, tmp_path_factory) -> SimpleNamespace:
    """Two small real runs shared by the explain/visual tests: `seed_cnn` (seed-basic-cnn, 1 epoch)
    and `transfer` (EfficientNet-Lite0 head, 2 epochs), both at 64 px on 8+8 train / 4+4 val photos;
    `data` is their photo folder."""
    import imgcls

    root = tmp_path_factory.mktemp("tiny-runs")
    data = cats_dogs_tree(root / "data", train=8, val=4)
    tiny = {"image_size": 64, "batch_size": 8, "progress": False, "out": root / "runs"}
    with _training_env(root / "cache"):
        seed_cnn = imgcls.train(data, "seed-basic-cnn", epochs=1, **tiny)
        transfer = imgcls.train(data, "transfer", epochs=2, **tiny)
    return SimpleNamespace(data=data, seed_cnn=seed_cnn, transfer=transfer)


# --------------------------------------------------------------------------- real browser (Debian chromium)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """$IMGCLS_CHROMIUM, else Debian's `chromium` on PATH (no Playwright browser download)."""
    import shutil

    return os.environ.get("IMGCLS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """A headless Playwright Chromium; CI installs Debian's chromium, elsewhere the test skips without it."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors and failed requests in `page.problems`."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    opened = context.new_page()
    opened.problems = []
    opened.on("console", lambda m: m.type == "error" and opened.problems.append(f"console: {m.text}"))
    opened.on("pageerror", lambda e: opened.problems.append(f"page error: {e}"))
    opened.on("requestfailed", lambda r: opened.problems.append(f"request failed: {r.url}"))
    yield opened
    context.close()


# --------------------------------------------------------------------------- a tiny served model (serve, faults)


@pytest.fixture(scope="session")
def served_run(cats_dogs_tree, tmp_path_factory) -> Path:
    """One tiny real model for every serve test: EfficientNet-Lite0 features + a head trained on 16 cats
    and 16 dogs at 160 px (seconds); the environment is restored afterwards."""
    import torch

    import imgcls

    data = cats_dogs_tree(tmp_path_factory.mktemp("serve-data") / "cats-dogs", train=16, val=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core machine: spinning OpenMP threads make small forwards crawl
    try:
        with _training_env(tmp_path_factory.mktemp("serve-cache")):
            return imgcls.train(
                data,
                "transfer",
                epochs=10,
                image_size=160,
                batch_size=8,
                progress=False,
                out=tmp_path_factory.mktemp("serve-runs"),
            )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def photos(cats_vs_dogs_dir) -> dict[str, list[Path]]:
    """Held-out photos per class (from val/, which the run above never trains on)."""
    return {name: sorted((cats_vs_dogs_dir / "val" / name).glob("*.jpg"))[10:16] for name in ("cat", "dog")}


@contextlib.contextmanager
def uvicorn_in_thread(app, **options):
    """An ASGI app on uvicorn in a thread, on a loopback socket bound before it starts (no port race);
    yields (host, port). `options` go to uvicorn.Config."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        thread.join(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def serve_in_thread():
    """`with serve_in_thread(app, **uvicorn_options) as (host, port): ...` (see `uvicorn_in_thread`)."""
    return uvicorn_in_thread
