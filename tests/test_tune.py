"""`imgcls tune` / `imgcls.tune`: a recipe search in a time budget, each trial an ordinary run.

One small real study (EfficientNet-Lite0 features + head at 64 px, on 12+12 train / 8+8 val / 4+4
test cats-vs-dogs photos, 3 trials) is shared by the module; the budget, failure, Ctrl-C and CLI
tests run single cheap trials on the same (by then cached) features. The search space and the cost
model are also checked without training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import imgcls
import imgcls.tune as tune_module
from imgcls.cli import app
from imgcls.cli.tune import train_settings
from imgcls.errors import ImgclsError
from imgcls.recipes import get_recipe
from imgcls.run import Run

pytestmark = [pytest.mark.usefixtures("one_thread")]
TINY = {"image_size": 64, "batch_size": 8, "epochs": 2, "progress": False}  # fixed: never searched


@pytest.fixture(scope="module")
def photos(cats_dogs_tree, cats_vs_dogs_dir: Path, tmp_path_factory) -> Path:
    """train/ and val/ from the shared photos, plus a test/ split of other val photos."""
    root = cats_dogs_tree(tmp_path_factory.mktemp("tune") / "photos", train=12, val=8)
    for name in ("cat", "dog"):
        (root / "test" / name).mkdir(parents=True)
        for photo in sorted((cats_vs_dogs_dir / "val" / name).glob("*.jpg"))[8:12]:
            (root / "test" / name / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def cache(training_env, tmp_path_factory):
    """One feature cache for the module: later trials of a configuration read it (as in real use)."""
    with training_env(tmp_path_factory.mktemp("tune-cache")) as patch:
        yield patch


@pytest.fixture(scope="module")
def study(photos: Path, cache, tmp_path_factory) -> tune_module.Tuned:
    out = tmp_path_factory.mktemp("tune-runs")
    return imgcls.tune(photos, "transfer", budget="3m", trials=3, out=out, name="study", **TINY)


def rows(study) -> list[dict]:
    return [json.loads(line) for line in (study.path / "trials.jsonl").read_text().splitlines()]


def test_every_trial_is_a_row_and_an_ordinary_run(study) -> None:
    found = rows(study)
    assert [row["number"] for row in found] == [0, 1, 2]
    assert {row["state"] for row in found} == {"complete"}
    for row in found:
        assert row["seconds"] > 0 and row["settings"] and row["val_accuracy"] is not None
        run = Run.open(row["run"])
        assert run.is_finished and run.path.parent == study.path / "trials"
        assert {k: getattr(run.recipe, k) for k in row["settings"]} == row["settings"]  # what it trained


def test_trial_zero_is_the_recipe_and_fixed_settings_are_never_searched(study) -> None:
    recipe = get_recipe("transfer").override(head_fit="epochs")  # TINY fixes epochs: the head trains for them
    first = rows(study)[0]
    assert first["changed"] == {}
    assert first["settings"] == {k: getattr(recipe, k) for k in first["settings"]}
    assert {"lr", "resize", "views"} <= first["settings"].keys()
    for row in rows(study):
        assert not {"image_size", "batch_size", "epochs"} & row["settings"].keys()
        assert Run.open(row["run"]).recipe.image_size == 64
    assert any(row["changed"] for row in rows(study)[1:])  # the others are variants


def test_study_json_names_the_best_by_val_accuracy_and_reports_its_test_figure(study) -> None:
    summary = json.loads((study.path / "study.json").read_text())
    best = summary["best"]
    complete = [row for row in rows(study) if row["state"] == "complete"]
    top = max(row["val_accuracy"] for row in complete)
    assert best["val_accuracy"] == top
    assert best["val_loss"] == min(row["val_loss"] for row in complete if row["val_accuracy"] == top)
    assert best["run"] == str(study.best_run) and summary["budget_seconds"] == 180
    assert 0 < summary["seconds"] < 180 and summary["stopped"] == "trials"
    run = study.best_run
    assert run.metrics["split"] == "test" and best["test_accuracy"] == run.metrics["accuracy"]
    kept = [r for r in run.history if r["stage"] == run.kept["stage"] and r["epoch"] == run.kept["epoch"]]
    assert best["val_accuracy"] == kept[-1]["val_accuracy"]  # val, not test, chose it
    assert "image_size" not in summary["search_space"]["transfer"]["features"]


def test_the_budget_stops_new_trials(photos: Path, cache, tmp_path: Path) -> None:
    tuned = imgcls.tune(photos, budget="1s", trials=5, out=tmp_path, **TINY)
    assert [t.number for t in tuned.trials] == [0]  # trial 0 always runs; then nothing fits
    assert tuned.stopped == "budget" and tuned.path == tmp_path / "transfer-tune"
    again = imgcls.tune(photos, budget="1s", trials=1, out=tmp_path, **TINY)
    assert again.path == tmp_path / "transfer-tune-2"  # a study folder is never reused


def test_a_failed_trial_is_recorded_and_the_study_goes_on(photos: Path, cache, tmp_path, monkeypatch) -> None:
    real = tune_module.train_run

    def failing_trial_1(*args, name: str, **kwargs):
        if name == "trial-001":
            raise ImgclsError("this trial's weights are missing")
        return real(*args, name=name, **kwargs)

    monkeypatch.setattr(tune_module, "train_run", failing_trial_1)
    tuned = imgcls.tune(photos, budget="2m", trials=3, out=tmp_path, **TINY)
    assert [t.state for t in tuned.trials] == ["complete", "failed", "complete"]
    assert tuned.trials[1].message == "this trial's weights are missing"
    assert rows(tuned)[1]["state"] == "failed"


def test_ctrl_c_stops_with_the_trials_so_far_recorded(photos: Path, cache, tmp_path, monkeypatch) -> None:
    real = tune_module.train_run

    def interrupted_at_trial_1(*args, name: str, **kwargs):
        if name == "trial-001":
            raise KeyboardInterrupt
        return real(*args, name=name, **kwargs)

    monkeypatch.setattr(tune_module, "train_run", interrupted_at_trial_1)
    tuned = imgcls.tune(photos, budget="2m", trials=5, out=tmp_path, **TINY)
    assert tuned.stopped == "interrupted" and [t.state for t in tuned.trials] == ["complete", "failed"]
    assert tuned.trials[1].message.startswith("interrupted (Ctrl-C)")
    assert json.loads((tuned.path / "study.json").read_text())["best"]["number"] == 0


def test_cli_prints_the_trials_and_what_to_do_next(photos: Path, cache, tmp_path: Path) -> None:
    args = ["tune", photos, "--budget", "1s", "--out", tmp_path, "--no-progress"]
    result = CliRunner().invoke(app, [str(a) for a in args] + ["--image-size", "64", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    best = tmp_path / "transfer-tune" / "trials" / "trial-000"
    assert "(the recipe)" in result.output and "stopped: budget" in result.output
    assert f"Next: imgcls evaluate {best}" in result.output.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--budget", "soon"], "--budget 'soon': give a duration such as 60s, 10m or 1.5h"),
        (["--recipe", "nope"], "unknown recipe 'nope'"),
        (["--trials", "0"], "--trials 0: give at least 1"),
        (["--resume", "runs/x"], "tune starts new trials"),
    ],
)
def test_bad_input_is_one_clear_message_before_any_folder(args, said, photos: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tune", str(photos), "--out", str(tmp_path), *args])
    assert isinstance(result.exception, ImgclsError) and said in str(result.exception)
    assert not any(tmp_path.iterdir())


def test_missing_data_is_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ImgclsError, match="no such folder"):
        imgcls.tune(tmp_path / "nowhere", out=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_train_options_on_the_tune_command_fix_settings() -> None:
    data, fixed = train_settings(["--image-size", "64", "photos", "--fine-tune", "--lr", "find"])
    assert data == "photos" and fixed == {"image_size": 64, "fine_tune": True, "lr": "find"}


def test_search_spaces_hold_the_recipe_and_leave_fixed_and_zero_settings_alone() -> None:
    from imgcls.tune import baseline, search_space

    scratch = get_recipe("seed-basic-cnn")  # adam, weight_decay 0: a log range has no 0
    space = {p.name: p for p in search_space(scratch, {"lr"})}
    assert set(space) == {"label_smoothing", "epochs"}
    assert space["epochs"].low <= scratch.epochs <= space["epochs"].high
    transfer = get_recipe("seed-vgg16")  # 180 px, views 2: the recipe's own values are among the choices
    space = {p.name: p for p in search_space(transfer, set())}
    assert 180 in space["image_size"].choices and space["lr"].low <= transfer.lr <= space["lr"].high
    assert "fine_tune_lr" not in baseline(transfer, list(space.values()))  # only when it fine-tunes
    fixed_off = {p.name for p in search_space(transfer, {"fine_tune"})}
    assert not {"fine_tune", "fine_tune_lr", "fine_tune_epochs"} & fixed_off


def test_cost_estimates_are_per_cache_key_and_warm_once_cached() -> None:
    from imgcls.tune import SAFETY, CostModel

    recipe = get_recipe("transfer").override(head_fit="epochs")  # 20 epochs of 0.5 s
    costs = CostModel(recipe)
    assert costs.estimate(recipe) is None  # trial 0 runs without an estimate
    history = [{"stage": "head", "epoch": e, "seconds": 0.5} for e in (1, 2)]
    costs.add(recipe, 30.0, history)  # cold: 29 s of features and start-up
    same_lr = recipe.override(lr=1e-2)
    assert costs.estimate(same_lr) == pytest.approx(SAFETY * (29 + 20 * 0.5))  # the first one is all we know
    costs.add(same_lr, 4.0, history)  # warm: the features were cached
    assert costs.estimate(recipe.override(lr=3e-4)) == pytest.approx(SAFETY * (3 + 20 * 0.5))
    bigger = recipe.override(image_size=256)  # not cached: a cold start, scaled by pixels
    assert costs.estimate(bigger) == pytest.approx(SAFETY * (29 * (256 / 192) ** 2 + 10))
    assert costs.estimate(recipe.override(fine_tune=True)) > costs.estimate(bigger)  # guessed until measured
    lbfgs = recipe.override(head_fit="lbfgs-cv")  # one fit, one history row: not `epochs` of them
    assert costs.estimate(lbfgs) == pytest.approx(SAFETY * (3 + 0.5))


def test_a_transfer_head_fitted_by_cv_has_no_learning_rate_to_search() -> None:
    from imgcls.tune import baseline, search_space

    transfer = get_recipe("transfer")
    assert transfer.head_fit == "lbfgs-cv"
    space = search_space(transfer, set())
    assert {"head_fit", "lr", "weight_decay"} <= {p.name for p in space}
    assert "lr" not in baseline(transfer, space) and baseline(transfer, space)["head_fit"] == "lbfgs-cv"


def test_imgcls_tune_stays_callable_once_its_module_is_imported() -> None:
    import imgcls.tune as module

    assert callable(imgcls.tune) and callable(module) and module.tune.__module__ == "imgcls.tune"
