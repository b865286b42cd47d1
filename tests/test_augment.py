import json
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors
from torchvision.transforms import v2

from imgcls.augment import AUGMENT_HELP, Augment, KerasAffine, build_transform
from imgcls.errors import ImgclsError

SIZE = (48, 64)  # H != W to catch row/column mix-ups

KERAS_TUTORIAL = dict(
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
)

EVERYTHING = dict(
    KERAS_TUTORIAL,
    vertical_flip=True,
    brightness_range=(0.7, 1.3),
    random_resized_crop=(0.35, 1),
    trivial_augment=True,
    random_erasing=0.5,
    hue=0.1,
    saturation=0.3,
    contrast=0.3,
)


def rand_img(channels=3, size=SIZE, low=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, 256, (channels, *size), dtype=torch.uint8, generator=g)


def framed_img(size=SIZE, border=200, seed=0):
    """Border pixels all `border`, interior random in [1, 255] (never 0)."""
    img = rand_img(3, size, low=1, seed=seed)
    img[:, 0, :] = border
    img[:, -1, :] = border
    img[:, :, 0] = border
    img[:, :, -1] = border
    return img


def col_gradient(size=SIZE, channels=1):
    h, w = size
    return torch.arange(w, dtype=torch.uint8).expand(channels, h, w).clone()


# -- dataclass ---------------------------------------------------------------------------------------


def test_defaults_are_off_and_build_returns_none():
    aug = Augment()
    assert not aug.enabled
    assert build_transform(aug, SIZE) is None
    # fill_mode / cval alone change nothing
    assert build_transform(Augment(fill_mode="constant", cval=9), SIZE) is None
    # no-op values are still "off"
    assert build_transform(Augment(zoom_range=(1, 1), brightness_range=(1, 1)), SIZE) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rotation_range": 10},
        {"width_shift_range": 0.1},
        {"height_shift_range": 3},
        {"shear_range": 5},
        {"zoom_range": 0.1},
        {"zoom_range": (0.5, 0.5)},
        {"horizontal_flip": True},
        {"vertical_flip": True},
        {"brightness_range": (0.5, 1.5)},
        {"random_resized_crop": (0.5, 1)},
        {"trivial_augment": True},
        {"random_erasing": 0.3},
        {"crop_padding": 4},
        {"hue": 0.1},
        {"saturation": 0.2},
        {"contrast": 0.2},
    ],
)
def test_each_option_enables(kwargs):
    aug = Augment(**kwargs)
    assert aug.enabled
    assert isinstance(build_transform(aug, SIZE), v2.Transform)


def test_help_covers_every_field():
    assert set(AUGMENT_HELP) == set(Augment.field_names())
    assert all(isinstance(v, str) and v and "\n" not in v for v in AUGMENT_HELP.values())


def test_lists_are_normalised_and_hashable():
    aug = Augment(zoom_range=[0.8, 1.2], brightness_range=[0.5, 1], random_resized_crop=[0.35, 1], cval=3.0)
    assert aug.zoom_range == (0.8, 1.2) and aug.brightness_range == (0.5, 1.0)
    assert aug.random_resized_crop == (0.35, 1.0)
    assert aug.cval == 3 and isinstance(aug.cval, int)
    hash(aug)
    assert Augment(zoom_range=0.2).zoom_bounds == pytest.approx((0.8, 1.2))


@pytest.mark.parametrize(
    "field, value",
    [
        ("rotation_range", -1),
        ("width_shift_range", -0.1),
        ("height_shift_range", -2),
        ("shear_range", -5),
        ("shear_range", 90),
        ("zoom_range", -0.1),
        ("zoom_range", 1.0),
        ("zoom_range", (0, 1)),
        ("zoom_range", (1.2, 0.8)),
        ("zoom_range", (1, 2, 3)),
        ("brightness_range", (-0.1, 1)),
        ("brightness_range", (1.5, 0.5)),
        ("brightness_range", 0.5),
        ("fill_mode", "mirror"),
        ("cval", 256),
        ("cval", -1),
        ("random_resized_crop", (0, 1)),
        ("random_resized_crop", (0.5, 1.5)),
        ("random_resized_crop", (0.9, 0.5)),
        ("random_erasing", 1.5),
        ("random_erasing", -0.1),
        ("crop_padding", 2.5),
        ("crop_padding", -1),
        ("hue", 0.6),
        ("hue", -0.1),
        ("saturation", -1),
        ("contrast", -0.5),
        ("horizontal_flip", "yes"),
        ("trivial_augment", 1),
        ("rotation_range", "40"),
        ("rotation_range", True),
        ("rotation_range", float("nan")),
    ],
)
def test_validation_errors_name_the_field(field, value):
    with pytest.raises(ImgclsError) as err:
        Augment(**{field: value})
    assert field in str(err.value)


def test_wrap_fill_mode_explains_alternatives():
    with pytest.raises(ImgclsError) as err:
        Augment(fill_mode="wrap")
    msg = str(err.value)
    assert "fill_mode" in msg and "wrap" in msg and "not supported" in msg
    assert "reflect" in msg and "nearest" in msg and "constant" in msg


def test_fill_mode_is_case_insensitive():
    assert Augment(fill_mode="Reflect").fill_mode == "reflect"


# -- from_dict / as_dict -----------------------------------------------------------------------------


def test_from_dict_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ImgclsError) as err:
        Augment.from_dict({"rotation_range": 10, "rotaton_range": 40, "channel_shift_range": 5})
    msg = str(err.value)
    assert "rotaton_range" in msg and "channel_shift_range" in msg
    assert "did you mean 'rotation_range'" in msg
    for name in Augment.field_names():
        assert name in msg


def test_from_dict_and_as_dict_round_trip_through_json():
    aug = Augment(**EVERYTHING)
    d = aug.as_dict()
    assert set(d) == set(Augment.field_names())
    assert Augment.from_dict(json.loads(json.dumps(d))) == aug
    assert Augment.from_dict(None) == Augment() == Augment.from_dict({})


def test_from_dict_parses_cli_strings():
    aug = Augment.from_dict(
        {
            "rotation-range": "40",
            "zoom_range": "0.2",
            "horizontal_flip": "true",
            "vertical_flip": "no",
            "brightness_range": "0.8,1.2",
            "random_resized_crop": "[0.35, 1]",
            "fill_mode": "reflect",
            "cval": "7",
        }
    )
    assert aug == Augment(
        rotation_range=40,
        zoom_range=0.2,
        horizontal_flip=True,
        brightness_range=(0.8, 1.2),
        random_resized_crop=(0.35, 1),
        fill_mode="reflect",
        cval=7,
    )
    assert Augment.from_dict({"brightness_range": "none"}).brightness_range is None
    assert Augment.from_dict({"zoom_range": "0.8, 1.2"}).zoom_range == (0.8, 1.2)
    with pytest.raises(ImgclsError, match="horizontal_flip"):
        Augment.from_dict({"horizontal_flip": "maybe"})
    with pytest.raises(ImgclsError, match="rotation_range"):
        Augment.from_dict({"rotation_range": "lots"})
    with pytest.raises(ImgclsError):
        Augment.from_dict(["rotation_range", 40])


# -- build_transform ----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "recipe",
    [
        KERAS_TUTORIAL,
        EVERYTHING,
        dict(KERAS_TUTORIAL, fill_mode="reflect"),
        dict(KERAS_TUTORIAL, fill_mode="constant", cval=128),
    ],
    ids=["keras", "everything", "reflect", "constant"],
)
def test_dtype_and_shape_preserved(channels, recipe):
    t = build_transform(Augment(**recipe), SIZE)
    torch.manual_seed(0)
    for seed in range(10):
        img = rand_img(channels, seed=seed)
        out = t(img)
        assert out.dtype == torch.uint8
        assert out.shape == img.shape
        assert type(out) is torch.Tensor


def test_batch_and_tv_tensor_inputs():
    t = build_transform(Augment(**KERAS_TUTORIAL), SIZE)
    batch = torch.stack([rand_img(seed=i) for i in range(4)])
    assert t(batch).shape == batch.shape and t(batch).dtype == torch.uint8
    out = t(tv_tensors.Image(rand_img()))
    assert isinstance(out, tv_tensors.Image) and out.shape == (3, *SIZE)
    # a label passed alongside is left alone
    img, label = t(rand_img(), 3)
    assert img.shape == (3, *SIZE) and label == 3


def test_build_transform_rejects_bad_size():
    with pytest.raises(ValueError):
        build_transform(Augment(horizontal_flip=True), (150,))
    with pytest.raises(ValueError):
        build_transform(Augment(horizontal_flip=True), (0, 150))
    with pytest.raises(TypeError):
        build_transform({"horizontal_flip": True}, SIZE)


def test_horizontal_flip_is_random_and_exact():
    img = rand_img()
    t = build_transform(Augment(horizontal_flip=True), SIZE)
    torch.manual_seed(0)
    flipped = unflipped = 0
    for _ in range(100):
        out = t(img)
        if torch.equal(out, img.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(out, img)
            unflipped += 1
    assert 25 <= flipped <= 75 and flipped + unflipped == 100


def test_vertical_flip_is_random_and_exact():
    img = rand_img(1)
    t = build_transform(Augment(vertical_flip=True), SIZE)
    torch.manual_seed(1)
    outs = [t(img) for _ in range(60)]
    assert any(torch.equal(o, img.flip(-2)) for o in outs)
    assert any(torch.equal(o, img) for o in outs)
    assert all(torch.equal(o, img.flip(-2)) or torch.equal(o, img) for o in outs)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect"])
def test_no_black_corners_with_nearest_or_reflect(fill_mode):
    img = framed_img()
    big = Augment(
        width_shift_range=0.45, height_shift_range=0.45, rotation_range=45, zoom_range=(1.5, 2.0), fill_mode=fill_mode
    )
    shift_only = Augment(width_shift_range=0.5, height_shift_range=0.5, fill_mode=fill_mode)
    torch.manual_seed(0)
    for aug in (big, shift_only):
        t = build_transform(aug, SIZE)
        for _ in range(30):
            out = t(img)
            assert out.shape == img.shape
            assert (out > 0).all()
    if fill_mode == "nearest":
        # zoomed out by >= 1.5: corners read far outside the image, i.e. repeated border pixels (200)
        out = build_transform(big, SIZE)(img)
        assert (out[:, 0, 0] == 200).all() and (out[:, -1, -1] == 200).all()


def test_constant_fill_mode_shows_cval():
    img = framed_img()
    aug = Augment(
        width_shift_range=0.45,
        height_shift_range=0.45,
        rotation_range=45,
        zoom_range=(1.5, 2.0),
        fill_mode="constant",
        cval=0,
    )
    t = build_transform(aug, SIZE)
    torch.manual_seed(0)
    for _ in range(10):
        out = t(img)
        assert (out == 0).any()
        assert out[:, 0, 0].eq(0).all()  # zoomed out: the corner is outside the image
    t = build_transform(Augment(zoom_range=(2, 2), fill_mode="constant", cval=37), SIZE)
    assert (t(img)[:, 0, 0] == 37).all()


def test_large_shift_with_constant_produces_zeros_on_some_draws():
    img = framed_img()
    t = build_transform(Augment(width_shift_range=0.5, height_shift_range=0.5, fill_mode="constant"), SIZE)
    torch.manual_seed(0)
    assert sum(bool((t(img) == 0).any()) for _ in range(20)) >= 15


def test_zoom_only_keeps_size_and_uses_keras_direction():
    # zoom_range=(0.5, 0.5): Keras reads input at 0.5 * (centred output position): a 2x zoom *in*.
    h, w = SIZE
    img = col_gradient(channels=3)
    t = build_transform(Augment(zoom_range=(0.5, 0.5)), SIZE)
    out = t(img)
    assert out.shape == img.shape and out.dtype == torch.uint8
    expected = 0.5 * (torch.arange(w) - (w - 1) / 2) + (w - 1) / 2
    assert (out[0, h // 2].float() - expected).abs().max() <= 0.51
    # random zoom in [0.8, 1.2]: identity size for 1 and 3 channels
    t = build_transform(Augment(zoom_range=0.2), SIZE)
    for c in (1, 3):
        assert t(rand_img(c)).shape == (c, *SIZE)


def test_width_shift_translates_columns_only():
    h, w = SIZE
    img = col_gradient()
    t = build_transform(Augment(width_shift_range=0.2), SIZE)
    torch.manual_seed(0)
    shifts = set()
    for _ in range(20):
        out = t(img).float()
        # rows are unchanged by a horizontal shift
        assert torch.equal(out, out[:, :1].expand_as(out))
        diff = out[0, 0, 15:-15] - img[0, 0, 15:-15].float()
        assert diff.max() - diff.min() <= 1  # a pure translation of the gradient
        assert abs(diff.mean()) <= 0.2 * w + 1
        shifts.add(round(diff.mean().item()))
    assert len(shifts) > 3


def test_shift_in_pixels_when_at_least_one():
    img = col_gradient()
    t = build_transform(Augment(width_shift_range=3), SIZE)
    torch.manual_seed(0)
    for _ in range(20):
        diff = t(img)[0, 0, 10:-10].float() - img[0, 0, 10:-10].float()
        assert diff.abs().max() <= 3.5


def test_matches_torchvision_pad_affine_centercrop():
    """Same geometry as v2.Pad(edge) + affine + CenterCrop, for a fixed rotation and zoom."""
    img = rand_img(size=(40, 56))
    z, deg = 0.8, 30.0
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    ka = KerasAffine(fill_mode="nearest")
    mine = ka.transform(img, {"matrix": (c * z, -s * z, s * z, c * z, 0.0, 0.0)})
    padded = TF.pad(img, [60], padding_mode="edge")
    ref = TF.center_crop(
        TF.affine(
            padded,
            angle=deg,
            translate=[0, 0],
            scale=1 / z,
            shear=[0.0, 0.0],
            interpolation=v2.InterpolationMode.BILINEAR,
        ),
        [40, 56],
    )
    assert (mine.int() - ref.int()).abs().max() <= 1

    # reflect == symmetric padding, nearest == edge padding, constant == constant padding (pure shift)
    shift = {"matrix": (1.0, 0.0, 0.0, 1.0, 13.0, -9.0)}
    for mode, pad_kw in [
        ("reflect", {"padding_mode": "symmetric"}),
        ("nearest", {"padding_mode": "edge"}),
        ("constant", {"fill": 7}),
    ]:
        out = KerasAffine(fill_mode=mode, cval=7).transform(img, shift)
        padded = TF.pad(img, [20], **pad_kw)
        assert torch.equal(out, padded[:, 20 + 13 : 20 + 13 + 40, 20 - 9 : 20 - 9 + 56]), mode


def test_brightness_halves_constant_image():
    img = torch.full((3, *SIZE), 101, dtype=torch.uint8)
    t = build_transform(Augment(brightness_range=(0.5, 0.5)), SIZE)
    out = t(img)
    assert out.dtype == torch.uint8
    assert (out.int() - 50.5).abs().max() <= 1
    gray = t(img[:1])
    assert (gray.int() - 50.5).abs().max() <= 1


def test_brightness_range_is_random_within_bounds():
    img = torch.full((1, *SIZE), 100, dtype=torch.uint8)
    t = build_transform(Augment(brightness_range=(0.5, 1.5)), SIZE)
    torch.manual_seed(0)
    values = {int(t(img)[0, 0, 0]) for _ in range(30)}
    assert min(values) >= 49 and max(values) <= 150 and len(values) > 10


def test_deterministic_under_manual_seed():
    t = build_transform(Augment(**EVERYTHING), SIZE)
    img = rand_img()

    def run(seed):
        torch.manual_seed(seed)
        return [t(img) for _ in range(5)]

    a, b, c = run(123), run(123), run(7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_random_erasing_always_on_blanks_a_rectangle():
    img = rand_img(low=1)
    out = build_transform(Augment(random_erasing=1.0), SIZE)(img)
    assert (out == 0).any() and (out == img).any()


def test_random_resized_crop_outputs_size():
    t = build_transform(Augment(random_resized_crop=(0.35, 1)), SIZE)
    assert t(rand_img(size=(80, 90))).shape == (3, *SIZE)


@pytest.mark.parametrize(("fill_mode", "numpy_mode"), [("reflect", "symmetric"), ("nearest", "edge")])
def test_crop_padding_is_a_whole_pixel_window_of_the_padded_image(fill_mode, numpy_mode):
    """Every output is exactly some 32x32 window of the image padded as fill_mode says: no blur."""
    img = rand_img(size=(32, 32))
    padded = torch.from_numpy(np.pad(img.numpy(), ((0, 0), (4, 4), (4, 4)), mode=numpy_mode))
    windows = {(dy, dx): padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)}
    transform = build_transform(Augment(crop_padding=4, fill_mode=fill_mode), (32, 32))
    torch.manual_seed(0)
    seen = set()
    for _ in range(60):
        out = transform(img)
        (offset,) = [key for key, window in windows.items() if torch.equal(window, out)]
        seen.add(offset)
    assert len(seen) > 20  # many different offsets, including shifted ones
    assert Augment.from_dict({"crop_padding": "4"}).crop_padding == 4
