"""Uploads without a model: the served formats decode to the model's pixels whatever their mode,
everything else is refused with the right status before any decoder sees it, and the size limit
stops reading a body as soon as it is exceeded (or before, from its Content-Length)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import anyio
import numpy as np
import pytest

from imgcls.models.classifier import ModelSpec
from imgcls.serve.uploads import UploadError, UploadLimit, decode_upload, in_memory_file, sniff_format

SPEC = ModelSpec(architecture="any", classes=["a", "b"], image_size=32)


def encoded(images, mode: str, fmt: str, size=(48, 40), **options) -> bytes:
    buffer = io.BytesIO()
    images.make_pil(mode, size).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "JPEG"), ("RGBA", "PNG"), ("I;16", "PNG"), ("P", "GIF"), ("RGB", "BMP"), ("RGB", "WEBP"), ("L", "TIFF")],
)
def test_served_formats_decode_to_model_pixels(images, mode, fmt):
    data = encoded(images, mode, fmt)
    assert sniff_format(data[:32]) == fmt
    pixels = decode_upload(data, SPEC)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 1  # the pattern, not a blank


def test_grayscale_model_gets_one_channel(images):
    spec = ModelSpec(architecture="any", classes=["a", "b"], image_size=16, channels=1)
    assert decode_upload(encoded(images, "RGB", "PNG"), spec).shape == (16, 16, 1)


def test_exif_orientation_is_applied(images):
    upright = decode_upload(encoded(images, "RGB", "PNG", size=(64, 64)), SPEC)
    exif = images.make_pil().getexif()
    exif[0x0112] = 3  # rotated 180 degrees
    turned = decode_upload(encoded(images, "RGB", "JPEG", size=(64, 64), exif=exif, quality=95), SPEC)
    # shown turned by 180 degrees: its top-left corner is the stored picture's bottom-right one
    assert np.abs(turned[4, 4].astype(int) - upright[-5, -5]).max() < 40
    assert np.abs(turned[4, 4].astype(int) - upright[4, 4]).max() > 100


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"hello, not an image", 415, "not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", 415, "jpeg, png"),  # Pillow could open it, through Ghostscript
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, 400, "truncated or corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "corrupt"),
    ],
)
def test_refused_uploads(data, status, words):
    with pytest.raises(UploadError) as refused:
        decode_upload(data, SPEC)
    assert refused.value.status == status
    assert words in refused.value.message.lower()


def test_in_memory_file_leaves_nothing_behind():
    with in_memory_file(b"abc") as path:
        assert path.read_bytes() == b"abc"
    assert not path.exists()


# --------------------------------------------------------------------------- the upload limit itself


def run_coroutine(function, *args):
    """`anyio.run` in a thread of its own: the session's Playwright browser may own this thread's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, function, *args).result()


async def drive(middleware: UploadLimit, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> dict:
    """Run the middleware on an app that reads the whole body; count what it pulled from the client."""
    pulled = {"chunks": 0, "status": None}

    async def receive():
        index = pulled["chunks"]
        pulled["chunks"] += 1
        return {"type": "http.request", "body": chunks[index], "more_body": index + 1 < len(chunks)}

    async def send(message):
        if message["type"] == "http.response.start":
            pulled["status"] = message["status"]

    middleware.app = reads_everything
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    try:
        await middleware(scope, receive, send)
    except UploadError as error:
        pulled["status"] = error.status
    return pulled


async def reads_everything(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("declared", [True, False])
def test_upload_limit_stops_reading_at_the_limit(declared):

    limit = UploadLimit(reads_everything, max_bytes=100_000)
    chunks = [b"x" * 65_536] * 160  # 10 MiB offered
    headers = [(b"content-length", str(65_536 * 160).encode())] if declared else []
    pulled = run_coroutine(drive, limit, chunks, headers)
    assert pulled["status"] == 413
    assert pulled["chunks"] == (0 if declared else 2)  # refused from the header, or at the first chunk past it
    small = run_coroutine(drive, limit, [b"x" * 1000] * 3, [])
    assert small == {"chunks": 3, "status": 200}
