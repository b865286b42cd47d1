"""One way in: every option of `imgcls train` is a keyword of `imgcls.train`, resolved by the same code."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

import imgcls
from imgcls import api
from imgcls.cli import app
from imgcls.errors import ImgclsError
from imgcls.recipes import SEED_AUGMENT, get_recipe

# a value each option accepts, for options whose default (None) would leave everything as it is
SAMPLES = {
    "val_split": 0.3,
    "epochs": 4,
    "image_size": 96,
    "channels": 1,
    "batch_size": 12,
    "lr": 0.01,
    "early_stopping": 2,
    "monitor": "val_accuracy",
    "class_weights": "auto",
    "flip_tta": True,
    "augment": False,
    "aug": ["rotation_range=10"],
    "backbone": "timm/resnet18",
    "weights": "imagenet",
    "views": 3,
    "fine_tune": True,
    "unfreeze_from": "last:1",
    "fine_tune_epochs": 5,
    "fine_tune_lr": 3e-5,
    "fine_tune_image_size": 128,
    "label_pattern": r"^(\w+)\.\d+\.jpg$",
    "labels": Path("labels.csv"),
    "data_dir": Path("somewhere"),
    "name": "mine",
    "devices": "2",
}


def train_options() -> list[str]:
    command = typer.main.get_command(app).commands["train"]
    return [p.name for p in command.params if p.name not in ("data", "recipe", "resume")]


def test_the_cli_and_the_api_take_the_same_names() -> None:
    names = train_options()
    assert len(names) > 30
    for name in names:
        value = SAMPLES.get(name)
        settings = {name: value} if value is not None else {}
        if name == "labels":
            settings["label_from"] = "folder"
        recipe, options = api.resolve("transfer", settings)  # raises on an unknown name
        if name in api.OPTION_NAMES and name != "labels" and value is not None:
            assert getattr(options, name) == (int(value) if name == "devices" else value), name


def test_conveniences_reach_the_recipe_and_the_options() -> None:
    recipe, options = api.resolve(
        "seed-basic-cnn", {"augment": True, "aug": ["rotation_range=5"], "label_from": "name", "devices": "2"}
    )
    assert recipe.augment.rotation_range == 5 and recipe.augment.zoom_range == SEED_AUGMENT.zoom_range
    assert options.labels.from_names and options.devices == 2
    recipe, _ = api.resolve("transfer", {"backbone": "timm/resnet18", "unfreeze_from": "layer4", "image_size": 160})
    assert recipe.model_args["backbone"] == "timm/resnet18" and recipe.unfreeze == "layer4"
    assert recipe.image_size == 160 and recipe.mean != get_recipe("transfer").mean  # ImageNet statistics
    with pytest.raises(ImgclsError, match="unknown recipe field"):
        api.resolve("transfer", {"epochz": 3})
    with pytest.raises(ImgclsError, match="--backbone needs a transfer recipe"):
        api.resolve("scratch", {"backbone": "timm/resnet18"})
    with pytest.raises(ImgclsError, match="--channels 2"):
        api.resolve("scratch", {"channels": 2})
    with pytest.raises(ImgclsError, match="--class-weights 'none'"):
        api.resolve("scratch", {"class_weights": "none"})
    recipe, _ = api.resolve("transfer", {"backbone": "timm/resnet18", "resize": "pad"})  # the backbone's own is crop
    assert recipe.resize == "pad"
    with pytest.raises(ImgclsError, match="resize 'stretch': use one of squash, crop, pad"):
        api.resolve("transfer", {"resize": "stretch"})


def test_resume_takes_no_other_settings(tmp_path: Path) -> None:
    with pytest.raises(ImgclsError, match="leave out: epochs, recipe"):
        imgcls.train(recipe="scratch", resume=tmp_path, epochs=3, progress=False)


@pytest.mark.slow
@pytest.mark.shared_data
def test_train_with_a_backbone_from_python(cats_dogs_subset, imgcls_env, tmp_path: Path) -> None:
    data = cats_dogs_subset("photos", train=6, val=3)
    run = imgcls.train(
        data, backbone="efficientnet_lite0", epochs=2, out=tmp_path / "runs", name="lite", report=False, progress=False
    )
    assert run.path == tmp_path / "runs" / "lite"
    assert run.spec.arch_args["backbone"] == "efficientnet_lite0" and run.spec.image_size == 224
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]
    assert not run.report_path.exists()
    assert imgcls.load(run).predict(sorted((data / "val" / "cat").iterdir())[:1])[0].label in ("cat", "dog")
