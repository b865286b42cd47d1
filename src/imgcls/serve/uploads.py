"""Uploads: a size limit enforced while the body streams in, and decoding that only ever says no.

`UploadLimit` refuses a body over the limit from its Content-Length before reading anything, and
counts the bytes of bodies that do not declare a length (or lie about it), stopping at the limit;
a body that has not arrived within `body_timeout_s` (one byte a second...) is refused with 408.
`decode_upload` turns bytes into the model's pixels through `imgcls.data.decode.load_image`, the
same decoder as training (EXIF orientation, modes, decompression-bomb guard), after checking with
Pillow's own format sniffers that the bytes are one of the served formats: nothing else reaches a
decoder, so exotic Pillow plugins (EPS runs Ghostscript) are out of reach of a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgcls.data.decode import BadImageError, load_image
from imgcls.models.classifier import ModelSpec

SERVED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
SERVED_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"
MULTIPART_ALLOWANCE = 16 * 1024  # boundaries and part headers around the file in a multipart body


class UploadError(Exception):
    """A request the server refuses: `status` is the HTTP code, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def too_large_message(max_bytes: int) -> str:
    return f"upload larger than the limit of {max_bytes / 2**20:g} MiB (--max-upload-mb)"


class UploadLimit:
    """ASGI middleware: at most `max_bytes` (+ multipart framing) of request body, counted as it arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.max_body = max_bytes + MULTIPART_ALLOWANCE
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            too_large = declared.isdigit()
            status, message = (413, too_large_message(self.max_bytes)) if too_large else (400, "bad Content-Length")
            # Connection: close, since the body is left unread
            response = JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def counted() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later calls wait for the disconnect, without a deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                late = f"the upload did not arrive within {self.body_timeout_s:g} s (--body-timeout)"
                raise UploadError(408, late) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body:
                    raise UploadError(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted, send)


def sniff_format(head: bytes) -> str | None:
    """The served format whose Pillow signature check accepts these first bytes, else None."""
    Image.init()
    for name in SERVED_FORMATS:
        accept = Image.OPEN.get(name, (None, None))[1]
        if accept is not None and accept(head) is True:
            return name
    return None


def decode_upload(data: bytes, spec: ModelSpec) -> np.ndarray:
    """(H, W, C) uint8 at the model's size, or `UploadError` (415: not a served image; 400: broken)."""
    if not data:
        raise UploadError(400, "empty upload (0 bytes): send a photo")
    if sniff_format(data[:32]) is None:
        raise UploadError(415, f"not an image, or not a format this server reads: send {SERVED_NAMES}")
    try:
        with in_memory_file(data) as path:
            return load_image(path, (spec.image_size, spec.image_size), spec.channels, spec.resize)
    except BadImageError as error:
        raise UploadError(400, error.reason) from None
    except Exception as error:  # a Pillow plugin failing in a way load_image does not map: still just a bad file
        raise UploadError(400, f"cannot decode ({type(error).__name__}); truncated or corrupt") from None


@contextlib.contextmanager
def in_memory_file(data: bytes) -> Iterator[Path]:
    """A path holding `data` for `load_image` (which sniffs files by path to explain failures): an
    anonymous memory file on Linux, else a private temporary file; gone when the block ends."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        descriptor = os.memfd_create("imgcls-upload", os.MFD_CLOEXEC)
        try:
            with open(descriptor, "wb", closefd=False) as handle:
                handle.write(data)
            yield Path(f"/proc/self/fd/{descriptor}")
        finally:
            os.close(descriptor)
        return
    with tempfile.TemporaryDirectory(prefix="imgcls-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        yield path
