"""What a training batch is made of: progressive resizing (`progressive_from`), MixUp/CutMix
(`augment.mixup`, `augment.cutmix`) with soft labels, and validation every N epochs (`val_every`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import imgcls
from imgcls.augment import Augment
from imgcls.errors import ImgclsError
from imgcls.recipes import Recipe, get_recipe
from imgcls.training.module import ClassifierModule


def test_progressive_sizes_ramp_in_16px_steps_to_the_full_size() -> None:
    recipe = get_recipe("scratch").override(image_size=128, epochs=20, progressive_from=64, progressive_until=0.5)
    sizes = [recipe.training_size(epoch) for epoch in range(20)]
    assert sizes[0] == 64
    assert sizes == sorted(sizes)
    assert all(size % 16 == 0 for size in sizes)
    assert {64, 80, 96, 112} <= set(sizes[:10])  # the ramp: half of the epochs
    assert sizes[10:] == [128] * 10
    assert recipe.full_size_epoch == 10
    plain = get_recipe("scratch").override(image_size=128, progressive_from=0)
    assert {plain.training_size(e) for e in range(30)} == {128} and plain.full_size_epoch == 0  # off


def test_progressive_resizing_trains_small_and_validates_at_full_size() -> None:
    module = _module({"progressive_from": 32, "epochs": 4, "image_size": 64})
    pixels = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    trained, soft = module.training_batch(pixels, torch.tensor([0, 1, 0, 1]))
    assert trained.shape == (4, 3, 32, 32) and soft is None
    assert trained.min() >= 0 and trained.max() <= 255  # still pixels: the model normalises them
    assert module(trained).shape == (4, 2)  # global pooling: any size


def test_cutmix_pastes_boxes_and_labels_them_by_area() -> None:
    torch.manual_seed(0)
    module = _module({"augment": {"cutmix": 1.0}})
    pixels = torch.stack([torch.full((3, 32, 32), 40 * k, dtype=torch.uint8) for k in range(6)])
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    mixed, soft = module.training_batch(pixels, labels)
    assert soft.shape == (6, 2)
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    share_kept = soft[torch.arange(6), labels]
    # each image keeps its own value outside the pasted box; labels follow the areas
    for k in range(6):
        own = (mixed[k] == 40 * k).all(0).float().mean()
        if labels[k] != labels.roll(1)[k]:  # torchvision pairs each image with the previous one
            torch.testing.assert_close(share_kept[k], own, atol=1e-6, rtol=0)
    assert (share_kept < 1).any(), "some images should get a box of another"


def test_soft_labels_that_are_one_hot_give_the_plain_loss() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    logits = torch.randn(4, 2)
    for recipe in ({"label_smoothing": 0.1}, {"label_smoothing": 0.0}):
        module = _module(recipe)
        one_hot = torch.nn.functional.one_hot(labels, 2).float()
        torch.testing.assert_close(module.loss(logits, labels, one_hot), module.loss(logits, labels))
    binary = _module({}, output="sigmoid")
    single = logits[:, :1]
    one_hot = torch.nn.functional.one_hot(labels, 2).float()
    torch.testing.assert_close(binary.loss(single, labels, one_hot), binary.loss(single, labels))


@pytest.mark.parametrize("value", [-1, "much", True])
def test_bad_mixing_strength_names_the_option(value) -> None:
    with pytest.raises(ImgclsError, match="cutmix"):
        Augment.from_dict({"cutmix": value})


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.usefixtures("imgcls_env")
def test_a_run_with_mixing_resizing_and_sparse_validation(cats_dogs_subset, tmp_path: Path) -> None:
    run = _tiny_scratch_run(
        cats_dogs_subset,
        tmp_path,
        image_size=48,
        epochs=4,
        progressive_from=32,
        progressive_until=0.25,  # epoch 1 at 32 px, then 48
        val_every=2,
        augment={"horizontal_flip": True, "mixup": 0.4, "cutmix": 1.0},
    )
    rows = run.history
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]  # a row per epoch, with its training figures
    assert all("accuracy" in row and row["seconds"] > 0 for row in rows)
    # validated: not the small-size epoch 1; then every 2nd epoch at the full size, and the last
    assert [int(row["epoch"]) for row in rows if "val_accuracy" in row] == [3, 4]
    assert run.spec.image_size == 48
    assert run.kept["epoch"] in (3, 4)
    assert load_file(str(run / "model.safetensors"))


def _module(recipe: dict, output: str = "softmax") -> ClassifierModule:
    base = get_recipe("scratch").override(augment={}, progressive_from=0).as_dict()
    spec = {"architecture": "fast-resnet", "classes": ["a", "b"], "image_size": 32, "arch_args": {}, "output": output}
    return ClassifierModule(spec, {**base, "label_smoothing": 0.0, **recipe}, steps_per_epoch=1)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_discriminative_rates_fall_block_by_block_towards_the_input(schedule: str) -> None:
    from imgcls.models.backbones import set_trainable

    base = get_recipe("transfer").override(augment={}, fine_tune_lr=1e-3, fine_tune_lr_decay=0.5)
    spec = {"architecture": "transfer", "classes": ["a", "b"], "image_size": 64, "output": "sigmoid"}
    spec["arch_args"] = {"backbone": "efficientnet_lite0"}
    recipe = {**base.as_dict(), "fine_tune_schedule": schedule, "fine_tune_epochs": 1}
    module = ClassifierModule(spec, recipe, steps_per_epoch=4, stage="fine-tune")
    assert set_trainable(module.model.net.backbone, "last:2") == ["blocks.5", "blocks.6+conv_head+bn2"]
    optimizer = module.configure_optimizers()["optimizer"]
    peaks = [group.get("max_lr", group["initial_lr"]) for group in optimizer.param_groups]
    assert peaks == pytest.approx([1e-3, 5e-4, 2.5e-4])  # head, last block, the one before
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    wanted = [p for p in module.model.parameters() if p.requires_grad]
    assert len(trained) == len(wanted) and {id(p) for p in trained} == {id(p) for p in wanted}
    head = {id(p) for p in module.model.net.head.parameters()}
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == head


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("val_every", 0),
        ("val_every", 1.5),
        ("progressive_from", -8),
        ("progressive_until", 0),
        ("progressive_until", 1.5),
        ("fine_tune_lr_decay", 0),
        ("fine_tune_lr_decay", 2),
        ("val_every", "2"),
        ("eval_crops", 0),
        ("eval_crops", [0.9, 1.2]),
        ("eval_crops", []),
        ("eval_crops", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),
    ],
)
def test_schedule_fields_out_of_range_are_refused_with_their_name(field: str, value) -> None:
    with pytest.raises(ImgclsError, match=field):
        get_recipe("scratch").override(**{field: value})
    assert get_recipe("scratch").override(val_every=3, progressive_until=1, fine_tune_lr_decay=0.5).val_every == 3


def test_fine_tune_lr_decay_reaches_the_recipe_from_the_cli_and_the_api() -> None:
    import typer

    from imgcls import api
    from imgcls.cli.app import app

    command = typer.main.get_command(app).commands["train"]
    assert "fine_tune_lr_decay" in {p.name for p in command.params}
    recipe, _ = api.resolve("transfer", {"fine_tune": True, "fine_tune_lr_decay": 0.5})
    assert recipe.fine_tune_lr_decay == 0.5


def test_eval_crop_reaches_the_model_from_the_cli_and_the_api() -> None:
    import typer

    from imgcls import api
    from imgcls.cli.app import app
    from imgcls.recipes import model_spec

    command = typer.main.get_command(app).commands["train"]
    assert "eval_crops" in {p.name for p in command.params}
    for given in (0.9, [0.9], "0.9", (0.9,)):
        recipe, _ = api.resolve("scratch", {"eval_crops": given})
        assert recipe.eval_crops == (0.9,) and model_spec(recipe, ["cat", "dog"]).eval_crops == (0.9,), given
    assert api.resolve("scratch", {"eval_crops": "0.9,0.8"})[0].eval_crops == (0.9, 0.8)
    assert Recipe.from_dict({**recipe.as_dict(), "eval_crops": [0.9]}) == recipe  # config.yaml holds a list


def test_short_runs_end_at_the_full_size() -> None:
    for epochs in (1, 2, 3):
        recipe = get_recipe("scratch").override(image_size=128, epochs=epochs, progressive_from=64, progressive_until=1)
        assert recipe.training_size(epochs - 1) == 128, epochs


@pytest.mark.parametrize(
    ("recipe", "settings", "refusal"),
    [
        ("seed-basic-cnn", {"progressive_from": 64}, "seed-basic-cnn is built for 150-px"),
        ("transfer", {"progressive_from": 96}, "trains a head on cached features"),
        ("transfer", {"aug": ["cutmix=1.0"]}, "mixup/cutmix"),
        ("transfer", {"eval_crops": 0.8}, "eval_crops: for whole networks"),
    ],
)
def test_options_a_recipe_cannot_train_with_are_refused(recipe: str, settings: dict, refusal: str) -> None:
    from imgcls import api

    with pytest.raises(ImgclsError, match=refusal):
        api.resolve(recipe, settings)


def test_class_weights_weigh_mixed_images_by_their_shares() -> None:
    module = _module({})
    module.class_weights = torch.tensor([1.0, 3.0])
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    one_hot = torch.nn.functional.one_hot(labels, 2).float()
    torch.testing.assert_close(module.loss(logits, labels, one_hot), module.loss(logits, labels))
    half = torch.full((6, 2), 0.5)
    per_image = torch.nn.functional.cross_entropy(logits, half, reduction="none")
    torch.testing.assert_close(module.loss(logits, labels, half), per_image.mean())  # equal weights: 2 each


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.usefixtures("imgcls_env")
def test_early_stopping_waits_for_validations(cats_dogs_subset, tmp_path: Path) -> None:
    """Lightning's early stopping checks after every epoch unless told otherwise: on an epoch without
    validation it would stop the run with "val_loss is not available"."""
    run = _tiny_scratch_run(cats_dogs_subset, tmp_path, image_size=32, epochs=6, val_every=3, early_stopping=1)
    rows = run.history
    assert [int(row["epoch"]) for row in rows if "val_loss" in row] == [3, 6]
    assert len(rows) == 6


def _tiny_scratch_run(cats_dogs_subset, tmp_path: Path, **settings):
    """`scratch` on 16 training and 8 validation photos, 8 a batch."""
    data = cats_dogs_subset("data", train=16, val=8)
    return imgcls.train(data, "scratch", out=tmp_path / "runs", batch_size=8, progress=False, **settings)
