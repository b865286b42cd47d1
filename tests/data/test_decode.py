"""load_image: every format and Pillow mode decoded the same way; bad files become BadImageError."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgcls.data import decode
from imgcls.data.decode import PAD_GREY, BadImageError, is_image_file, load_image
from imgcls.files import display_path

pytestmark = pytest.mark.usefixtures("isolated_cache")


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def reason_of(path: Path, **kwargs) -> str:
    with pytest.raises(BadImageError) as info:
        load_image(path, **kwargs)
    assert info.value.path == Path(path)
    assert info.value.reason in str(info.value)
    return info.value.reason.lower()


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "lossless", "save_kwargs"),
    [
        ("a.jpg", False, {"quality": 95}),
        ("a.jpeg", False, {}),
        ("a.png", True, {}),
        ("a.bmp", True, {}),
        ("a.gif", False, {}),
        ("a.webp", True, {"lossless": True}),
        ("a.webp", False, {"quality": 90}),
        ("a.tif", True, {}),
        ("a.tiff", True, {"compression": "tiff_lzw"}),
    ],
)
def test_reads_every_format(images, make_image, name: str, lossless: bool, save_kwargs: dict) -> None:
    path = make_image(name, size=(32, 24), **save_kwargs)
    assert is_image_file(path)
    array = load_image(path)
    assert array.shape == (24, 32, 3) and array.dtype == np.uint8
    expected = images.pattern(32, 24)
    if lossless:
        np.testing.assert_array_equal(array, expected)
    else:
        assert mean_abs_diff(array, expected) < 8

    resized = load_image(path, size=(12, 20))
    assert resized.shape == (12, 20, 3) and resized.dtype == np.uint8
    gray = load_image(path, size=(12, 20), channels=1)
    assert gray.shape == (12, 20, 1)


def test_extension_filter() -> None:
    assert is_image_file(Path("x/IMG.JPG")) and is_image_file(Path("a.TiFf"))
    assert not is_image_file(Path("notes.txt"))
    assert not is_image_file(Path(".hidden.jpg"))  # macOS ._ files and the like


def test_accepts_a_pil_image_and_crop_policy(images) -> None:
    img = images.make_pil("RGB", (40, 20))
    np.testing.assert_array_equal(load_image(img), images.pattern(40, 20))
    cropped = load_image(img, size=(10, 10), policy="crop")
    squashed = load_image(img, size=(10, 10), policy="squash")
    assert cropped.shape == squashed.shape == (10, 10, 3)
    # crop keeps the centre: its left column is well inside the red/blue quadrants' right edge
    assert not np.array_equal(cropped, squashed)


def test_pad_policy_keeps_the_whole_photo_on_grey(images) -> None:
    """Letterbox: a 40x20 photo becomes 10x5 in the middle of a 10x10 grey square (rows 0-2 and 8-9 grey)."""
    padded = load_image(images.make_pil("RGB", (40, 20)), size=(10, 10), policy="pad")
    assert padded.shape == (10, 10, 3)
    grey = np.full((10, 3), PAD_GREY, np.uint8)
    np.testing.assert_array_equal(padded[0], grey)
    np.testing.assert_array_equal(padded[-1], grey)
    middle = padded[3:7]
    assert not (middle == PAD_GREY).all()  # the photo itself, not grey
    gray = load_image(images.make_pil("L", (20, 40)), size=(10, 10), channels=1, policy="pad")
    assert (gray[:, 0, 0] == PAD_GREY).all() and (gray[:, -1, 0] == PAD_GREY).all()  # tall: grey sides


def test_unknown_policy_is_a_programming_error_not_a_bad_image(make_image) -> None:
    path = make_image("a.png")
    with pytest.raises(ValueError, match="policy"):
        load_image(path, size=(8, 8), policy="stretch")


# --------------------------------------------------------------------------- modes


def test_grayscale_becomes_three_equal_channels(images, make_image) -> None:
    path = make_image("g.png", mode="L")
    array = load_image(path)
    expected = np.asarray(images.make_pil("L"))
    for channel in range(3):
        np.testing.assert_array_equal(array[:, :, channel], expected)
    np.testing.assert_array_equal(load_image(path, channels=1)[:, :, 0], expected)


def test_bilevel_mode_1(make_image) -> None:
    array = load_image(make_image("b.png", mode="1"))
    assert array.shape == (24, 32, 3)
    assert set(np.unique(array)) <= {0, 255}


@pytest.mark.parametrize("name", ["p.png", "p.gif", "p.bmp", "p.tif"])
def test_palette_without_transparency(make_image, name: str) -> None:
    path = make_image(name, mode="P")
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" not in img.info
        expected = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(load_image(path), expected)


@pytest.mark.parametrize("name", ["t.png", "t.gif"])
def test_palette_with_transparency_is_composited_on_white(tmp_path: Path, name: str) -> None:
    pixels = np.zeros((10, 20), dtype=np.uint8)
    pixels[:, 10:] = 1  # index 0 (left half) is transparent, index 1 is red
    img = Image.fromarray(pixels, "P")
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    path = tmp_path / name
    img.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    array = load_image(path)
    assert (array[:, :10] == 255).all(), "transparent pixels must be white, not the palette's black"
    assert (array[:, 10:] == (255, 0, 0)).all()


@pytest.mark.parametrize("name", ["rgba.png", "rgba.webp", "rgba.tif"])
def test_rgba_composited_on_white(images, make_image, name: str) -> None:
    path = make_image(name, mode="RGBA", **({"lossless": True} if name.endswith("webp") else {}))
    array = load_image(path)
    assert array.shape == (24, 32, 3)
    assert (array[:, :16] == 255).all()  # fully transparent half
    np.testing.assert_array_equal(array[:, 16:], images.pattern(32, 24)[:, 16:])  # opaque half untouched


def test_semi_transparent_is_blended_with_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    array = load_image(img)
    assert np.all(np.abs(array.astype(int) - 127) <= 1)


def test_la_composited_on_white(images, make_image) -> None:
    array = load_image(make_image("la.png", mode="LA"))
    assert (array[:, :16] == 255).all()
    gray = np.asarray(images.make_pil("L"))[:, 16:]
    np.testing.assert_array_equal(array[:, 16:, 0], gray)


@pytest.mark.parametrize("name", ["cmyk.jpg", "cmyk.tif"])
def test_cmyk(images, make_image, name: str) -> None:
    path = make_image(name, mode="CMYK", size=(32, 24), **({"quality": 95} if name.endswith("jpg") else {}))
    with Image.open(path) as img:
        assert img.mode == "CMYK"
        expected = np.asarray(img.convert("RGB"))
    array = load_image(path)
    np.testing.assert_array_equal(array, expected)
    assert mean_abs_diff(array, np.asarray(images.make_pil("CMYK").convert("RGB"))) < 8
    assert load_image(path, size=(12, 16)).shape == (12, 16, 3)


@pytest.mark.parametrize("name", ["g16.png", "g16.tif"])
def test_16_bit_full_range_is_scaled_to_8_bit(make_image, name: str) -> None:
    path = make_image(name, mode="I;16", size=(64, 32))
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")
    array = load_image(path)
    assert array.shape == (32, 64, 3)
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64) / 257
    assert np.abs(array[:, :, 0].astype(float) - ramp).max() <= 1
    assert array.min() == 0 and array.max() == 255
    assert (array[:, :, 0] == array[:, :, 1]).all()


def test_16_bit_big_endian_tiff(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 16 * 8).reshape(8, 16).astype(np.uint16)
    img = Image.frombytes("I;16B", (16, 8), values.astype(">u2").tobytes())
    img.save(tmp_path / "be.tif")
    array = load_image(tmp_path / "be.tif")
    assert np.abs(array[:, :, 0].astype(float) - values / 257).max() <= 1


@pytest.mark.parametrize("name", ["dark16.png", "dark16.tif"])
def test_dark_16_bit_image_stays_dark(tmp_path: Path, name: str) -> None:
    """A 16-bit image whose values happen to be <= 255 is still 16-bit data: nearly black, not bright."""
    values = np.tile(np.arange(0, 256, dtype=np.uint16), (4, 1))  # at most 255 of 65535
    Image.fromarray(values).save(tmp_path / name)
    with Image.open(tmp_path / name) as img:
        assert img.mode == "I;16"
    assert load_image(tmp_path / name).max() <= 1


def test_float_and_int32_modes() -> None:
    values = np.linspace(0, 255, 64).reshape(8, 8)
    as_float = load_image(Image.fromarray(values.astype(np.float32), "F"))
    np.testing.assert_allclose(as_float[:, :, 0], values, atol=1)
    assert load_image(Image.fromarray(values.astype(np.int32), "I")).max() >= 254


def test_animated_gif_uses_first_frame(images, tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as img:
        assert img.n_frames == 3
    array = load_image(path)
    assert (array == (255, 0, 0)).all()


# --------------------------------------------------------------------------- EXIF orientation

# What each EXIF orientation tells a viewer to do to the stored pixels, in plain numpy.
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def write_exif_jpeg(images, path: Path, orientation: int, size: tuple[int, int] = (40, 20)) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    images.make_pil("RGB", size).save(path, quality=95, exif=exif)
    return path


def corners(array: np.ndarray) -> list[tuple[int, ...]]:
    h, w = array.shape[:2]
    top, bottom, left, right = h // 5, h - 1 - h // 5, w // 5, w - 1 - w // 5
    points = [(top, left), (top, right), (bottom, left), (bottom, right)]
    return [tuple(int(v) for v in array[y, x]) for y, x in points]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(images, tmp_path: Path, orientation: int) -> None:
    path = write_exif_jpeg(images, tmp_path / f"o{orientation}.jpg", orientation)
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == orientation
        assert img.size == (40, 20)
        reference = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    array = load_image(path)
    np.testing.assert_array_equal(array, reference)

    expected = ORIENT[orientation](images.pattern(40, 20))
    assert array.shape == expected.shape == ((20, 40, 3) if orientation < 5 else (40, 20, 3))
    for got, want in zip(corners(array), corners(expected), strict=True):
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) < 30, (orientation, got, want)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_with_resize(images, tmp_path: Path, orientation: int) -> None:
    path = write_exif_jpeg(images, tmp_path / "big.jpg", orientation, size=(400, 200))
    with Image.open(path) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    reference = np.asarray(upright.resize((30, 50), Image.Resampling.BILINEAR))
    array = load_image(path, size=(50, 30))
    assert array.shape == (50, 30, 3)
    assert mean_abs_diff(array, reference) < 4
    expected = ORIENT[orientation](images.pattern(400, 200))
    for got, want in zip(corners(array), corners(expected[::10, ::10]), strict=True):
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) < 30


# --------------------------------------------------------------------------- JPEG draft


@pytest.fixture
def decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records the size of the image handed from the decoder to the resize step."""
    sizes: list[tuple[int, int]] = []
    original = decode._to_array

    def spy(img, *args, **kwargs):
        sizes.append(img.size)
        return original(img, *args, **kwargs)

    monkeypatch.setattr(decode, "_to_array", spy)
    return sizes


def test_jpeg_draft_used_for_small_targets(images, tmp_path: Path, decoded_sizes) -> None:
    path = tmp_path / "large.jpg"
    images.make_pil("RGB", (1024, 768)).save(path, quality=92)
    array = load_image(path, size=(64, 64))
    assert decoded_sizes[-1] == (128, 96), "DCT scaling (1/8) should decode at 128x96, not 1024x768"

    with Image.open(path) as img:
        full = img.convert("RGB")
    reference = np.asarray(full.resize((64, 64), Image.Resampling.BILINEAR))
    assert array.shape == (64, 64, 3)
    assert mean_abs_diff(array, reference) < 3

    load_image(path)  # no target size: full decode
    assert decoded_sizes[-1] == (1024, 768)
    load_image(path, size=(700, 1000))  # barely smaller: no reduction possible
    assert decoded_sizes[-1] == (1024, 768)


def test_jpeg_draft_never_decodes_below_the_target(images, tmp_path: Path, decoded_sizes) -> None:
    """With EXIF rotation the stored sides are swapped; the draft must still cover the target."""
    path = write_exif_jpeg(images, tmp_path / "rot.jpg", 6, size=(800, 200))  # shown as 200 wide, 800 tall
    array = load_image(path, size=(400, 100))
    stored_w, stored_h = decoded_sizes[-1]
    assert stored_w >= 400 and stored_h >= 100, decoded_sizes  # stored width becomes the shown height
    assert stored_w < 800, "draft should still reduce"
    assert array.shape == (400, 100, 3)


def test_draft_not_applied_to_png(make_image, decoded_sizes) -> None:
    load_image(make_image("big.png", size=(512, 256)), size=(16, 16))
    assert decoded_sizes[-1] == (512, 256)


# --------------------------------------------------------------------------- bad files


def jpeg_bytes(images, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    images.make_pil("RGB", size).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_jpeg(images, tmp_path: Path, fraction: float) -> None:
    data = jpeg_bytes(images)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert "truncated" in reason_of(path)
    assert "truncated" in reason_of(path, size=(8, 8))  # the draft path too


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_png(tmp_path: Path, fraction: float) -> None:
    data = png_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * fraction)])
    reason = reason_of(path)
    assert "truncated" in reason or "corrupt" in reason


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF plugin warns about the cut EXIF
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "WEBP"])
@pytest.mark.parametrize("keep", [16, 40, 100])
def test_cut_inside_header_is_truncated_not_unrecognised(images, tmp_path: Path, fmt: str, keep: int) -> None:
    buffer = io.BytesIO()
    images.make_pil("RGB", (64, 48)).save(buffer, fmt)
    path = tmp_path / f"head.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[:keep])
    reason = reason_of(path)
    assert "truncated" in reason, reason
    assert "not an image" not in reason


def test_corrupt_png_data(tmp_path: Path) -> None:
    data = bytearray(png_bytes())
    start = data.index(b"IDAT") + 20
    data[start : start + 200] = bytes(200)
    path = tmp_path / "garbled.png"
    path.write_bytes(bytes(data))
    assert "corrupt" in reason_of(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    reason = reason_of(path)
    assert "empty" in reason and "0 bytes" in reason


def test_text_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    assert "not an image" in reason_of(path)


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in reason_of(tmp_path / "gone.jpg")


def test_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "target-that-does-not-exist.jpg")
    assert "not found" in reason_of(link)


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    folder = tmp_path / "x.jpg"
    folder.mkdir()
    assert "directory" in reason_of(folder)


def test_unreadable_file(images, tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    path.write_bytes(jpeg_bytes(images))
    path.chmod(0)
    try:
        try:
            path.open("rb").close()
        except PermissionError:
            pass
        else:
            pytest.skip("running as root (or without permission checks): chmod 000 files stay readable")
        assert "permission denied" in reason_of(path)
    finally:
        path.chmod(0o644)


def test_permission_error_mapped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same mapping without relying on file modes (which root ignores)."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.jpg"))

    monkeypatch.setattr(decode, "open_regular", refuse)
    assert "permission denied" in reason_of(tmp_path / "x.jpg")


def png_with_declared_size(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR is patched to claim width x height (CRC fixed), no big data."""
    data = bytearray(png_bytes((4, 4)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 10000), (9500, 9500)])
def test_decompression_bomb(tmp_path: Path, width: int, height: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_declared_size(width, height))
    reason = reason_of(path)
    assert "bomb" in reason and "large" in reason
    assert "bomb" in reason_of(path, size=(8, 8))


def test_declared_size_just_under_limit_is_not_a_bomb(tmp_path: Path) -> None:
    """A header declaring fewer pixels than the limit is not refused as a bomb (it is just truncated here)."""
    path = tmp_path / "big.png"
    path.write_bytes(png_with_declared_size(9000, 9000))
    reason = reason_of(path)
    assert "bomb" not in reason and ("truncated" in reason or "corrupt" in reason)


# --------------------------------------------------------------------------- non-UTF-8 names


def bytes_path(folder: Path, name: bytes) -> Path:
    target = os.path.join(os.fsencode(folder), name)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except (OSError, UnicodeError):
        pytest.skip("file system refuses non-UTF-8 file names")
    os.close(fd)
    return Path(os.fsdecode(target))


def test_valid_image_with_non_utf8_name_loads(images, tmp_path: Path) -> None:
    path = bytes_path(tmp_path, b"caf\xe9.jpg")
    path.write_bytes(jpeg_bytes(images))
    assert os.fsencode(path).endswith(b"caf\xe9.jpg")
    array = load_image(path, size=(16, 16))
    assert array.shape == (16, 16, 3)

    shown = display_path(path)
    assert shown.isprintable() and "caf" in shown
    shown.encode("utf-8")  # no lone surrogates: safe to print or log
    assert display_path(os.fsencode(path)) == shown


def test_bad_image_with_non_utf8_name_has_printable_message(tmp_path: Path) -> None:
    path = bytes_path(tmp_path, b"bad\xff\xfe.png")
    path.write_bytes(b"garbage")
    with pytest.raises(BadImageError) as info:
        load_image(path)
    message = str(info.value)
    message.encode("utf-8")
    assert message.isprintable() and "not an image" in message


def test_display_path_plain_names_unchanged() -> None:
    assert display_path(Path("data/cats/01.jpg")) == "data/cats/01.jpg"
    assert display_path("données/été.png") == "données/été.png"
