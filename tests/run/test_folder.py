"""The run folder as one typed object: created once and never reused (also when two processes ask for
the same name at once), opened with typed reads, and the only code that names its files."""

from __future__ import annotations

import ast
import multiprocessing
from pathlib import Path

import pytest

import imgcls
from imgcls.data.discover import Dataset
from imgcls.errors import ImgclsError
from imgcls.models.classifier import ModelSpec
from imgcls.recipes import Recipe
from imgcls.run import Run, TrainOptions
from imgcls.run import folder as run_folder

SRC = Path(imgcls.__file__).parent


def _create(out: str, start, results) -> None:
    start.wait()
    results.put(str(Run.create(out, "same").path))


def test_two_processes_asking_for_one_name_get_two_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(run_folder.RUN_DIR_ENV, raising=False)
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_create, args=(str(tmp_path), start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
    made = sorted(results.get(timeout=5) for _ in workers)
    assert made == sorted(str(tmp_path / name) for name in ("same", "same-2", "same-3", "same-4"))


def test_an_existing_folder_is_never_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(run_folder.RUN_DIR_ENV, raising=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    run = Run.create(tmp_path, "mine")
    assert run.path == tmp_path / "mine-2"
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("make", ["missing", "empty", "bad-yaml"])
def test_open_says_what_is_wrong(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "run"
    if make != "missing":
        folder.mkdir()
    if make == "bad-yaml":
        (folder / "config.yaml").write_text("recipe: [unclosed\n")
    with pytest.raises(ImgclsError, match=str(folder)):
        run = Run.open(folder)
        run.recipe  # noqa: B018 - the read that fails


@pytest.mark.slow
@pytest.mark.shared_data
def test_typed_reads_of_a_finished_run(tiny_runs) -> None:
    run = Run.open(tiny_runs.transfer)
    assert isinstance(run.recipe, Recipe) and run.recipe.name == "transfer"
    assert isinstance(run.options, TrainOptions) and run.options.seed == 0
    assert isinstance(run.spec, ModelSpec) and run.spec.classes == ["cat", "dog"]
    assert isinstance(run.dataset, Dataset) and run.dataset.counts() == {
        "train": {"cat": 8, "dog": 8},
        "val": {"cat": 4, "dog": 4},
    }
    assert run.metrics["split"] == "val" and 0 <= run.metrics["accuracy"] <= 1
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]  # counted from 1, as Keras does
    assert run.kept == {"stage": "head", "epoch": run.kept["epoch"], "image_size": 64, "monitor": "val_loss"}
    assert run.kept["epoch"] in (1, 2)
    assert run.decode_settings().size == (run.spec.image_size,) * 2
    assert run.checkpoint("head", "best").is_file()
    model, spec = run.load_model()
    assert spec == run.spec and not model.training


RUN_FILES = {
    run_folder.CONFIG,
    run_folder.SPLIT,
    run_folder.CLASSES,
    run_folder.METRICS,
    run_folder.HISTORY,
    run_folder.SKIPPED,
    run_folder.CURVES,
    run_folder.CONFUSION,
    run_folder.CHECKPOINTS,
    run_folder.REPORT,
    run_folder.ONNX,
    run_folder.INT8_ONNX,
    "best.ckpt",
    "last.ckpt",
    "head-best.ckpt",
}


def string_constants(path: Path) -> set[str]:
    """Every string literal of a module that is not a docstring."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


SAME_NAME_OTHER_THING = {
    "data/split.py": {"split.json"},  # the manifest of a dataset folder that `data split` writes
    "models/weights.py": {"checkpoints"},  # torch hub's download folder
}


def test_only_the_run_package_names_run_folder_files() -> None:
    named = {
        str(path.relative_to(SRC)): string_constants(path) & RUN_FILES
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] != "run"
    }
    named = {module: files - SAME_NAME_OTHER_THING.get(module, set()) for module, files in named.items()}
    assert {module: sorted(files) for module, files in named.items() if files} == {}
