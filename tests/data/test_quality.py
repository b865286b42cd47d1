"""Image-quality checks of `imgcls data check` on generated pictures, and on the shared real photos."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from rich.console import Console
from typer.testing import CliRunner

from imgcls.cli import app
from imgcls.data.check import check_dataset, print_check
from imgcls.data.quality import MIN_CLASS_FOR_OUTLIERS, Features, QualityThresholds, outlier_scores

runner = CliRunner()
CHECKS = ("low_information", "dark", "bright", "blurry", "tiny", "odd_aspect", "grayscale", "outliers")

# --------------------------------------------------------------------------- pictures


def photo(seed: int, size: tuple[int, int] = (300, 225)) -> Image.Image:
    """A photo-like picture: colour 1/f noise (detail at every scale, like a natural image) plus a
    few sharp-edged rectangles."""
    width, height = size
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    falloff = 1 / np.maximum(np.hypot(fx, fy), 1 / max(size))
    noise = [np.fft.ifft2(falloff * np.exp(2j * np.pi * rng.random((height, width)))).real for _ in range(3)]
    pixels = np.stack(noise, axis=-1)
    pixels = 0.6 * pixels + 0.4 * pixels.mean(axis=-1, keepdims=True)
    pixels = (pixels - pixels.mean()) / pixels.std() * 45 + 120
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width * 3 // 4 + 1)), int(rng.integers(0, height * 3 // 4 + 1))
        x1, y1 = x0 + int(rng.integers(1, width // 3 + 2)), y0 + int(rng.integers(1, height // 3 + 2))
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def not_found_graphic() -> Image.Image:
    """What a broken scraper saves: a grey picture frame and "Image not found" on white."""
    image = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((150, 60, 250, 140), outline=(180, 180, 180), width=4)
    draw.line((150, 140, 190, 100, 220, 125, 250, 90), fill=(180, 180, 180), width=4)
    draw.text((110, 180), "Image not found", fill=(90, 90, 90), font=ImageFont.load_default(size=24))
    return image


def scaled(image: Image.Image, factor: float, towards: int) -> Image.Image:
    """Every pixel pulled towards black (0) or white (255): a very dark or very bright exposure."""
    pixels = np.asarray(image, dtype=np.float64)
    return Image.fromarray((towards + (pixels - towards) * factor).astype(np.uint8))


# Each special picture and the one check that must flag it; `photo` pictures must be flagged by none.
SPECIAL = {
    "cat/flat_grey.png": (lambda: Image.new("RGB", (300, 200), (128, 128, 128)), "low_information"),
    "cat/not_found.png": (not_found_graphic, "low_information"),
    "cat/dark.jpg": (lambda: scaled(photo(101), 0.15, towards=0), "dark"),
    "dog/bright.jpg": (lambda: scaled(photo(102), 0.15, towards=255), "bright"),
    "dog/blurred.jpg": (lambda: photo(103).filter(ImageFilter.GaussianBlur(6)), "blurry"),
    "dog/sharp_original.jpg": (lambda: photo(103), None),
    "cat/tiny.png": (lambda: photo(104, (20, 20)), "tiny"),
    "dog/wide.jpg": (lambda: photo(105, (1000, 100)), "odd_aspect"),
    "cat/gray.jpg": (lambda: photo(106).convert("L"), "grayscale"),
}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cat/ and dog/: 6 ordinary photo-like pictures each plus the SPECIAL ones (a seeded val split)."""
    root = tmp_path_factory.mktemp("quality") / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for k in range(6):
            photo(k + (0 if name == "cat" else 50)).save(root / name / f"photo{k}.jpg", quality=90)
    for relative, (make, _) in SPECIAL.items():
        make().save(root / relative, quality=90)
    return root


@pytest.fixture(autouse=True)
def _cache(isolated_cache: Path) -> None:
    """Every test but the shared-photo one reads its pictures afresh (no cache from another test)."""


def flagged(report: dict) -> dict[str, set[str]]:
    """file path -> the checks that flag it."""
    found: dict[str, set[str]] = {}
    for name, check in report["quality"]["checks"].items():
        for item in check["files"]:
            found.setdefault(item["path"], set()).add(name)
    return found


def render(report: dict) -> str:
    console = Console(record=True, width=220, file=io.StringIO())
    print_check(report, console)
    return console.export_text()


# --------------------------------------------------------------------------- the checks


def test_each_bad_picture_is_flagged_by_exactly_its_check(pictures: Path) -> None:
    report = check_dataset(pictures)

    expected = {path: {check} for path, (_, check) in SPECIAL.items() if check}
    assert flagged(report) == expected  # the ordinary photos and the sharp original: nothing
    assert list(report["quality"]["checks"]) == list(CHECKS)
    assert report["quality"]["checks"]["outliers"]["count"] == 0 and not report["quality"]["outliers_searched"]
    assert any("--outliers" in note for note in report["notes"])


def test_quality_findings_are_warnings_that_name_the_threshold(pictures: Path) -> None:
    report = check_dataset(pictures)

    assert report["ok"] is True and report["errors"] == []
    quality_lines = [p for p in report["problems"] if p.startswith("image quality:")]
    assert "image quality: 1 blurry: sharpness (Laplacian std / grayscale std at 256 px) < 0.12" in quality_lines
    assert (
        "image quality: 2 near-blank or low information: grayscale entropy < 3 bits, or one colour > 80% of the picture"
        in quality_lines
    )
    assert len(quality_lines) == 7  # every check but outliers found something
    [blurred] = report["quality"]["checks"]["blurry"]["files"]
    assert blurred["split"] in ("train", "val") and blurred["class"] == "dog"
    assert 0 < blurred["value"] < 0.12 and blurred["why"].startswith("sharpness ")

    text = render(report)
    assert "Image quality" in text and "min_sharpness=0.12" in text and "max_aspect=2.5" in text
    assert "dog/wide.jpg" in text and "1000x100 px (10.00:1)" in text
    assert "OK: " in text.strip().splitlines()[-1]


def test_a_changed_threshold_changes_the_findings(pictures: Path) -> None:
    default = check_dataset(pictures)
    looser = QualityThresholds().with_settings(["max_aspect=12", "min_side=16", "dark=20"])
    changed = check_dataset(pictures, quality=looser)

    assert "dog/wide.jpg" in flagged(default) and "dog/wide.jpg" not in flagged(changed)
    assert "cat/tiny.png" in flagged(default) and "cat/tiny.png" not in flagged(changed)
    assert "cat/dark.jpg" in flagged(default) and "cat/dark.jpg" not in flagged(changed)
    assert changed["quality"]["thresholds"]["max_aspect"] == 12.0
    assert changed["quality"]["checks"]["odd_aspect"]["rule"] == "long side / short side > 12"

    # stricter: ordinary photos become "blurry" once the bar is above their sharpness
    sharpest = max(s.sharpness for s in _stats_of_photos(pictures))
    strict = check_dataset(pictures, quality=QualityThresholds(min_sharpness=sharpest + 0.01))
    assert {f"cat/photo{k}.jpg" for k in range(6)} <= {
        f["path"] for f in strict["quality"]["checks"]["blurry"]["files"]
    }


def _stats_of_photos(root: Path):
    from imgcls.data.hashing import inspect_files

    return [r.quality for r in inspect_files(sorted(root.glob("*/photo*.jpg")))]


def test_bad_settings_are_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="NAME one of min_entropy, max_flat_share, dark"):
        QualityThresholds().with_settings(["sharpness=3"])
    with pytest.raises(ValueError, match="min_side takes a number"):
        QualityThresholds().with_settings(["min_side=big"])
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        QualityThresholds().with_settings(["dark=-1"])
    assert QualityThresholds().with_settings(["min-side=100"]).min_side == 100


def test_grayscale_pictures_are_not_flagged_in_a_grayscale_data_set(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(4):
            photo(k + ord(name)).convert("L").save(tmp_path / name / f"{k}.png")
    report = check_dataset(tmp_path)
    assert report["quality"]["checks"]["grayscale"]["count"] == 0
    assert flagged(report) == {}


def test_a_failing_statistic_never_makes_a_readable_picture_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgcls.data import hashing

    def broken(*args) -> None:
        raise ZeroDivisionError("a statistic's bug")

    monkeypatch.setattr(hashing, "measure", broken)
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        photo(ord(name)).save(tmp_path / "data" / name / "0.png")
    report = check_dataset(tmp_path / "data")
    assert report["unreadable"] == [] and report["ok"]


def test_a_data_set_of_small_pictures_is_not_tiny_as_a_whole(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(4):
            photo(k + ord(name), (32, 32)).save(tmp_path / name / f"{k}.png")
    photo(7, (12, 12)).save(tmp_path / "a" / "smaller.png")
    report = check_dataset(tmp_path)
    assert [f["path"] for f in report["quality"]["checks"]["tiny"]["files"]] == ["a/smaller.png"]


def test_statistics_of_every_kind_of_file_and_orientation(tmp_path: Path) -> None:
    """Palette, alpha, 16-bit, CMYK and animated files all get statistics; EXIF rotation changes none of
    them beyond which pixels the colour sample picks."""
    from imgcls.data.hashing import inspect_files

    base = photo(7)
    exif = base.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    base.save(tmp_path / "tagged.png", exif=exif)
    base.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "turned.png")
    base.convert("P").save(tmp_path / "palette.png", transparency=0)
    base.convert("RGBA").save(tmp_path / "alpha.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257).save(tmp_path / "deep.png")
    frames = [base.convert("P"), photo(8).convert("P")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    paths = sorted(tmp_path.iterdir())
    stats = {p.name: r.quality for p, r in zip(paths, inspect_files(paths), strict=True)}

    assert all(s is not None and np.isfinite(s.as_array()).all() for s in stats.values()), stats
    tagged, turned = stats["tagged.png"].as_array(), stats["turned.png"].as_array()
    assert tagged[[0, 2, 3, 4]] == pytest.approx(turned[[0, 2, 3, 4]])  # grayscale statistics: exactly
    assert tagged[[1, 5]] == pytest.approx(turned[[1, 5]], rel=0.2)  # colour: another pixel sample
    assert stats["deep.png"].chroma == 0 and stats["alpha.png"].chroma > 20


# --------------------------------------------------------------------------- outliers


def test_outlier_scores_single_out_the_vector_far_from_its_class() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 64))
    labels = np.repeat([0, 1], 30)
    vectors = centres[labels] + 0.1 * rng.normal(size=(60, 64))
    vectors[7] = centres[1] + 0.1 * rng.normal(size=64)  # filed under class 0, looks like class 1
    scores = outlier_scores(vectors, labels)

    assert int(np.argmax(scores)) == 7 and scores[7] > 5
    assert np.sort(scores)[-2] < 5
    few = outlier_scores(vectors[: MIN_CLASS_FOR_OUTLIERS - 1], labels[: MIN_CLASS_FOR_OUTLIERS - 1])
    assert np.isnan(few).all()  # too few images to know what the class looks like


def test_check_dataset_flags_outliers_from_features_given_by_a_higher_layer(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for k in range(MIN_CLASS_FOR_OUTLIERS + 2):
            photo(k + (0 if name == "cat" else 100), (64, 48)).save(tmp_path / name / f"{k}.png")
    rng = np.random.default_rng(1)
    centre = {"cat": rng.normal(size=32), "dog": rng.normal(size=32)}
    odd = tmp_path / "dog" / "3.png"
    asked: list[list[Path]] = []

    def features(paths: list[Path]) -> Features:
        asked.append(paths)
        rows = [centre["cat" if p == odd else p.parent.name] + 0.05 * rng.normal(size=32) for p in paths]
        return Features(paths, np.stack(rows), "test-net")

    report = check_dataset(tmp_path, features=features)

    assert len(asked) == 1 and len(asked[0]) == 2 * (MIN_CLASS_FOR_OUTLIERS + 2)
    outliers = report["quality"]["checks"]["outliers"]
    assert report["quality"]["outliers_searched"] is True
    assert [f["path"] for f in outliers["files"]] == ["dog/3.png"] and outliers["files"][0]["value"] > 5
    assert "test-net" in outliers["rule"]
    assert not any("--outliers" in note for note in report["notes"])


# --------------------------------------------------------------------------- the command and the report


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    import imgcls.cli.data

    monkeypatch.setattr(imgcls.cli.data, "console", Console(width=220))


def test_cli_json_has_the_findings_and_quality_changes_a_threshold(pictures: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(pictures), "--json", "--quality", "max_aspect=20"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    checks = report["quality"]["checks"]
    assert [f["path"] for f in checks["blurry"]["files"]] == ["dog/blurred.jpg"]
    assert {f["path"] for f in checks["low_information"]["files"]} == {"cat/flat_grey.png", "cat/not_found.png"}
    assert checks["odd_aspect"]["files"] == [] and report["quality"]["thresholds"]["max_aspect"] == 20


def test_cli_table_and_a_bad_quality_setting(pictures: Path, wide_console: None) -> None:
    shown = runner.invoke(app, ["data", "check", str(pictures)])
    assert shown.exit_code == 0, shown.output
    assert "Image quality" in shown.stdout and "cat/not_found.png" in shown.stdout
    assert "gray_chroma=2" in shown.stdout

    bad = runner.invoke(app, ["data", "check", str(pictures), "--quality", "blurriness=3"])
    assert bad.exit_code == 2 and "min_sharpness" in bad.output and "Traceback" not in bad.output


def test_cli_help_names_every_threshold() -> None:
    text = " ".join(runner.invoke(app, ["data", "check", "--help"], terminal_width=200).stdout.split())
    for name in QualityThresholds.names():
        assert name in text, name


def test_cli_outliers_passes_backbone_features(pictures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imgcls.cli.data

    seen: list[int] = []

    def fake(paths: list[Path]) -> Features:
        seen.append(len(paths))
        return Features(paths, np.ones((len(paths), 4)), "fake-net")

    monkeypatch.setattr(imgcls.cli.data, "_backbone_features", fake)
    report = json.loads(runner.invoke(app, ["data", "check", str(pictures), "--json", "--outliers"]).stdout)
    assert seen == [report["n_images"]] and report["quality"]["outliers_searched"] is True
    assert "fake-net" in report["quality"]["checks"]["outliers"]["rule"]


def test_the_report_page_shows_the_findings(pictures: Path) -> None:
    from imgcls.report.page import Section, _template

    report = check_dataset(pictures)
    template = _template()
    html = "".join(template.blocks["image_quality"](template.new_context({"check": Section(data={"report": report})})))

    assert "dog/blurred.jpg" in html and "cat/not_found.png" in html and "1000x100 px" in html
    assert "sharpness (Laplacian std / grayscale std at 256 px) &lt; 0.12" in html  # escaped, with its threshold
    assert "--quality NAME=VALUE" in html
    skipped = "".join(template.blocks["image_quality"](template.new_context({"check": Section(note="not found")})))
    assert "not found" in skipped


# --------------------------------------------------------------------------- the shared photos


@pytest.mark.shared_data
def test_no_shared_cats_vs_dogs_photo_is_a_placeholder(cats_vs_dogs_dir: Path, monkeypatch) -> None:
    """The 3,000 real photos: none is near-blank, and the other checks flag few (each looked at)."""
    monkeypatch.delenv("IMGCLS_CACHE")  # the user's check cache: a second run reads no photo again
    report = check_dataset(cats_vs_dogs_dir)
    checks = report["quality"]["checks"]

    assert report["n_images"] == 3000
    assert checks["low_information"]["files"] == []
    assert checks["dark"]["count"] == checks["bright"]["count"] == 0
    for name in ("blurry", "tiny", "odd_aspect", "grayscale"):
        assert checks[name]["count"] <= 10, (name, checks[name]["files"])
    assert [f["path"] for f in checks["grayscale"]["files"]] == ["train/dog/dog.943.jpg"]  # a black-and-white photo
    assert "train/cat/cat.241.jpg" in {f["path"] for f in checks["blurry"]["files"]}  # out of focus
    assert "val/cat/cat.2433.jpg" in {f["path"] for f in checks["tiny"]["files"]}  # 59x41
