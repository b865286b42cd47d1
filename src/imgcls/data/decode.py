"""Decode any image file into a resized uint8 array, or say exactly why it cannot be read.

Every image goes through `load_image`, so training, evaluation and prediction see the same
pixels: EXIF orientation applied, every Pillow mode converted the same way, bad files
turned into `BadImageError` with a reason (never a crash).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgcls.files import display_path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_PIXELS = 89_478_485  # Pillow's own bomb limit: larger declared sizes are refused, not decoded
# squash = Keras flow_from_directory; crop = short side + centre; pad = the whole photo, letterboxed
RESIZE_POLICIES = ("squash", "crop", "pad")
PAD_GREY = 128  # what `pad` fills with: 0 after the TF-style mean/std 0.5 of the Lite backbones


class BadImageError(Exception):
    """A file that is not a usable image; `reason` is a short human explanation."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{display_path(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason


def open_regular(path: Path | str) -> BinaryIO:
    """Open `path` for reading only if it is a regular file. O_NONBLOCK makes opening a FIFO return
    at once instead of waiting forever for a writer; the check is on the opened file itself (fstat),
    so a file swapped for a FIFO after listing is caught too."""
    mode = os.stat(path).st_mode  # sockets cannot even be opened (ENXIO): say what they are
    if stat.S_ISDIR(mode):
        raise BadImageError(path, "is a directory")
    if not stat.S_ISREG(mode):
        raise BadImageError(path, f"not a regular file ({_file_kind(mode)})")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise BadImageError(path, f"not a regular file ({_file_kind(mode)})")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device")):
        if test(mode):
            return kind
    return "a block device" if stat.S_ISBLK(mode) else "special"


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(
    source: Path | str | Image.Image,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    policy: str = "squash",
) -> np.ndarray:
    """Return an (H, W, channels) uint8 array; `size` is (height, width) or None for the original."""
    if policy not in RESIZE_POLICIES:  # a caller's mistake, not a bad image: never report it per file
        raise ValueError(f"unknown resize policy {policy!r}; use one of {RESIZE_POLICIES}")
    if isinstance(source, Image.Image):
        return _to_array(source, size, channels, policy)
    path = Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path) as handle, Image.open(handle) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise BadImageError(
                        path, f"declared size {img.width}x{img.height} is too large (decompression bomb?)"
                    )
                if size is not None and img.format == "JPEG" and img.mode in ("RGB", "L", "YCbCr"):
                    img.draft(img.mode, _draft_request(img, size))  # DCT scaling: decode at reduced size
                return _to_array(img, size, channels, policy)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except PermissionError:
        raise BadImageError(path, "permission denied") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a directory") from None
    except UnidentifiedImageError:
        if _is_empty(path):
            reason = "empty file (0 bytes)"
        elif kind := _signature(path):
            reason = f"cannot decode ({kind} header incomplete); truncated or corrupt"
        else:
            reason = "not an image (unrecognised format)"
        raise BadImageError(path, reason) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImageError(path, "image too large (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadImageError(path, f"cannot decode ({_short(error)}); truncated or corrupt") from None


def _to_array(img: Image.Image, size: tuple[int, int] | None, channels: int, policy: str) -> np.ndarray:
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated GIF/WebP/TIFF: first frame
    img = ImageOps.exif_transpose(img)
    img = to_mode(img, "L" if channels == 1 else "RGB")
    if size is not None:
        img = resize(img, size, policy)
    array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 'RGB' or 'L': 16-bit scaled down, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img, dtype=np.float64)
        # I;16* is always 16-bit data (a dark image has small values, not 8-bit ones); only 32-bit "I"
        # may hold 8-bit values, so there the range decides
        scale = 257.0 if img.mode != "I" or values.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(values / scale + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == mode else img.convert(mode)


def resize(img: Image.Image, size: tuple[int, int], policy: str = "squash") -> Image.Image:
    height, width = size
    if policy == "squash":
        return img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if policy == "crop":
        return ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR)
    if policy == "pad":
        return _letterbox(img, width, height)
    raise ValueError(f"unknown resize policy {policy!r}; use one of {RESIZE_POLICIES}")


def _letterbox(img: Image.Image, width: int, height: int) -> Image.Image:
    """The long side to the size, aspect ratio kept, centred on grey (Ultralytics' letterbox), rounded
    and placed as timm's crop_mode "border" does (ResizeKeepRatio + CenterCropOrPad), pixel for pixel."""
    ratio = max(img.height / height, img.width / width)
    inner = (max(1, round(img.width / ratio)), max(1, round(img.height / ratio)))
    canvas = Image.new(img.mode, (width, height), PAD_GREY if img.mode == "L" else (PAD_GREY,) * 3)
    canvas.paste(img.resize(inner, Image.Resampling.BILINEAR), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def _draft_request(img: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """Ask the JPEG decoder for at least the target size (rotated EXIF swaps the sides)."""
    height, width = size
    orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _signature(path: Path) -> str | None:
    """The format whose magic bytes start the file (so a cut-short image is not called 'not an image')."""
    try:
        with open_regular(path) as handle:
            head = handle.read(12)
    except (OSError, BadImageError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) < 120 else text[:117] + "..."
