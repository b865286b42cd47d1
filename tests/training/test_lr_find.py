"""`--lr find` / `lr="find"`: Lightning's learning-rate finder picks a stage's rate before it trains,
on tiny subsets of real photos. The run records the number (never "find"), draws the curve beside
its points, resumes without searching again, and keeps the recipe's rate, saying why, when the finder
cannot suggest one."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml

import imgcls
from imgcls import api
from imgcls.errors import ImgclsError
from imgcls.recipes import get_recipe
from imgcls.run import Run
from imgcls.training import lr_find, transfer

pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# 32 + 32 training photos: the head's finder takes 100 steps on cached features, fine-tuning's one
# epoch of 32 batches (2 photos each; its batch norms keep their ImageNet statistics)
QUIET = {"progress": False, "report": False}
HEAD = {"image_size": 64, "batch_size": 8, "epochs": 3, **QUIET}
FINE_TUNE = {"fine_tune": True, "fine_tune_epochs": 1, "fine_tune_image_size": 64, "fine_tune_batch_size": 2}
FINE_TUNE["unfreeze_from"] = "last:1"


class CtrlCInFineTuning(L.Callback):
    """Ctrl-C after the first fine-tuning batch: after its finder, before the stage ends."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        raise KeyboardInterrupt


def finder_must_not_run(*args, **kwargs):
    raise AssertionError("the learning-rate finder ran again")


@pytest.fixture(scope="module")
def found(cats_dogs_tree, training_env, tmp_path_factory) -> SimpleNamespace:
    """A transfer run whose head and fine-tuning rates the finder picks, stopped by Ctrl-C in its
    first fine-tuning epoch, then resumed with the finder forbidden."""
    root = tmp_path_factory.mktemp("lr-find")
    data = cats_dogs_tree(root / "data", train=32, val=4)
    out = root / "runs"
    make_trainer = transfer.make_trainer

    def with_ctrl_c(job, stage, *args, **kwargs):
        trainer = make_trainer(job, stage, *args, **kwargs)
        if stage == "fine-tune":
            trainer.callbacks.append(CtrlCInFineTuning())
        return trainer

    with training_env(root / "cache") as patch:
        patch.setattr(transfer, "make_trainer", with_ctrl_c)
        with pytest.raises(ImgclsError, match="continue it with: imgcls train --resume"):
            imgcls.train(data, "transfer", lr="find", fine_tune_lr="find", out=out, **HEAD, **FINE_TUNE)
    run = Run.open(out / "transfer")
    interrupted = yaml.safe_load((run / "config.yaml").read_text())
    points_written = run.lr_find_path("fine-tune", "points").stat().st_mtime_ns
    with training_env(root / "cache") as patch:
        patch.setattr(lr_find, "find_lr", finder_must_not_run)
        resumed = imgcls.train(resume=run, progress=False, report=False)
    return SimpleNamespace(data=data, root=root, run=resumed, interrupted=interrupted, points_written=points_written)


def points(run: Run, stage: str) -> dict:
    return json.loads(run.lr_find_path(stage, "points").read_text())


def test_the_run_records_the_numbers_it_trained_with(found) -> None:
    run = Run.open(found.run.path)  # read from disk, as --resume and reproduction do
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert run.is_finished
    assert config["options"]["lr_find"] == ["fine_tune_lr", "lr"]
    for stage, field in (("head", "lr"), ("fine-tune", "fine_tune_lr")):
        chosen = config["lr_find"][stage]
        assert chosen["field"] == field
        assert isinstance(config["recipe"][field], float) and config["recipe"][field] == chosen["lr"]
        assert getattr(run.recipe, field) == chosen["lr"]
        assert chosen["recipe_lr"] == getattr(get_recipe("transfer"), field)  # the fallback, had there been none
    head = config["lr_find"]["head"]
    assert head["suggested"] and head["steps"] == lr_find.MAX_STEPS and "steepest descent" in head["why"]
    assert config["recipe"]["lr"] != get_recipe("transfer").lr  # the suggestion, not the recipe's 3e-3
    first_epoch = next(row for row in run.history if row["stage"] == "head")
    # the head's cosine schedule starts from the picked peak: 8 of its 24 steps done after epoch 1
    assert first_epoch["lr"] == pytest.approx(head["lr"] * (1 + math.cos(math.pi / 3)) / 2, rel=1e-3)


def test_the_curve_and_its_points_are_in_the_run(found) -> None:
    run = found.run
    for stage in ("head", "fine-tune"):
        saved = points(run, stage)
        assert run.lr_find_path(stage, "plot").stat().st_size > 10_000  # a drawn figure, not an empty file
        assert len(saved["lrs"]) == len(saved["losses"]) == saved["steps"]
        assert all(math.isfinite(value) for value in saved["lrs"] + saved["losses"]), saved
        assert saved["lrs"] == sorted(saved["lrs"]) and lr_find.MIN_LR <= saved["lrs"][0] < saved["lrs"][-1] <= 1
        if saved["suggested"]:  # the suggestion is one of the rates tried (rounded to 3 digits)
            assert saved["steps"] >= 13 and saved["lrs"][0] <= saved["lr"] <= saved["lrs"][-1]
            assert min(abs(math.log10(saved["lr"] / lr)) for lr in saved["lrs"]) < 0.01
        else:
            assert saved["lr"] == saved["recipe_lr"]
    assert points(run, "head")["suggested"]


def test_the_finder_leaves_no_files_behind(found) -> None:
    run = found.run
    assert not list(run.path.glob(".lr_find*")), "the finder's scratch folder was not removed"
    assert not list(run.path.rglob("*lr_find_*.ckpt")), "Lightning's temporary checkpoint was left"
    checkpoints = {path.name for path in run.checkpoints_dir.iterdir()}
    assert checkpoints <= {"head-best.ckpt", "fine-tune-best.ckpt", "fine-tune-last.ckpt", "fine-tune-interrupted.ckpt"}


def test_resume_uses_the_recorded_numbers_without_searching_again(found) -> None:
    """The fixture resumed with `find_lr` replaced by a failure: it was not called."""
    before, after = found.interrupted, yaml.safe_load((found.run / "config.yaml").read_text())
    assert "kept" not in before and before["lr_find"] == after["lr_find"] and before["recipe"] == after["recipe"]
    assert found.run.lr_find_path("fine-tune", "points").stat().st_mtime_ns == found.points_written
    assert [row["stage"] for row in found.run.history] == ["head"] * 3 + ["fine-tune"]
    saved = torch.load(found.run.checkpoint("fine-tune", "last"), map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["recipe"]["fine_tune_lr"] == after["recipe"]["fine_tune_lr"]
    assert saved["optimizer_states"][0]["param_groups"][0]["initial_lr"] == after["recipe"]["fine_tune_lr"]


def test_a_run_given_the_picked_number_trains_the_same(found, training_env) -> None:
    """The finder leaves no trace in the training that follows (weights, optimiser, random draws)."""
    picked = found.run.recipe.lr
    with training_env(found.root / "cache"):
        again = imgcls.train(found.data, "transfer", lr=picked, out=found.root / "again", **HEAD)
    assert not list(again.path.glob("lr_find*"))
    head = [row for row in found.run.history if row["stage"] == "head"]
    columns = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")
    assert [[row[c] for c in columns] for row in again.history] == [[row[c] for c in columns] for row in head]


def test_too_few_batches_keep_the_recipe_lr_and_say_why(cats_dogs_subset, imgcls_env, tmp_path, caplog) -> None:
    data = cats_dogs_subset("tiny", train=4, val=2)
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        run = imgcls.train(
            data, "seed-basic-cnn", lr="find", image_size=32, epochs=1, batch_size=8, out=tmp_path, **QUIET
        )
    recipe_lr = get_recipe("seed-basic-cnn").lr
    chosen = run.config["lr_find"]["train"]
    assert run.recipe.lr == recipe_lr and chosen["lr"] == recipe_lr and not chosen["suggested"]
    assert chosen["steps"] == 1 and "only 1 step" in chosen["why"]
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "no suggestion: only 1 step, as an epoch has 1 batch" in message
    assert f"keeping the recipe's lr {recipe_lr:.3g}" in message
    assert run.lr_find_path("train", "plot").name == "lr_find.png" and run.lr_find_path("train", "plot").is_file()
    assert not points(run, "train")["suggested"]


@pytest.mark.parametrize(
    ("losses", "reason"),
    [
        ([math.nan] * 40, "not finite (NaN or infinite) at 40 of 40 steps"),
        ([0.7] * 5, "diverged after 5 steps"),
        ([0.5 + step / 100 for step in range(40)], "never fell"),
    ],
)
def test_no_suggestion_says_why(losses: list[float], reason: str) -> None:
    lrs = [1e-7 * 10 ** (step * 7 / 39) for step in range(len(losses))]
    given = [None if math.isnan(loss) else loss for loss in losses]
    suggestion, why = lr_find.suggest(lrs, given, planned=40, batches=40)
    assert suggestion is None and reason in why


def test_the_suggestion_is_the_steepest_descent_on_the_log_scale() -> None:
    """A loss falling fastest at 1e-3 on the log scale the finder samples: the slope against lr
    itself (Lightning 2.6's suggestion) points at 2e-4 on this curve."""
    lrs = [1e-7 * 10 ** (step * 7 / 99) for step in range(100)]
    losses = [1 / (1 + math.exp(3 * (math.log10(lr) + 3))) for lr in lrs]
    suggestion, why = lr_find.suggest(lrs, losses, planned=100, batches=100)
    assert suggestion == pytest.approx(1e-3, rel=0.2) and "steepest descent" in why


def test_bad_values_and_unsupported_uses_are_refused() -> None:
    with pytest.raises(ImgclsError, match=r"--lr 'fast': use a number \(e\.g\. 3e-3\) or 'find'"):
        api.resolve("transfer", {"lr": "fast"})
    with pytest.raises(ImgclsError, match="--fine-tune-lr -0.1"):
        api.resolve("transfer", {"fine_tune_lr": -0.1})
    with pytest.raises(ImgclsError, match="--fine-tune-lr find: transfer has no fine-tune stage"):
        api.resolve("transfer", {"fine_tune_lr": "find"})
    with pytest.raises(ImgclsError, match="not supported with --engine ray"):
        api.resolve("transfer", {"lr": "find", "engine": "ray"})
    recipe, options = api.resolve("scratch", {"lr": "2e-3"})
    assert recipe.lr == 0.002 and options.lr_find == ()


def test_a_bad_lr_is_a_clear_cli_error(tmp_path: Path, imgcls_env, monkeypatch, capsys) -> None:
    """The command's own entry point (a subprocess only adds seconds of imports): exit 2, one line."""
    from imgcls.cli import main

    out = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", ["imgcls", "train", str(tmp_path), "--lr", "fast", "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        main()
    message = capsys.readouterr().err.strip()
    assert exited.value.code == 2, message
    assert message.startswith("error: --lr 'fast': use a number") and "or 'find'" in message, message
    assert "\n" not in message and "Traceback" not in message
    assert not out.exists()
