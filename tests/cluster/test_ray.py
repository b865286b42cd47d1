"""The Ray engine on a local 2-CPU Ray started by the suite: Ray Data prediction gives the local
engine's rows, Ray Train with 2 workers writes an ordinary run folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import imgcls
from imgcls.cli import app
from imgcls.errors import ImgclsError
from imgcls.predict import iter_files, onnx_predictor, predict_to_file

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'imgcls[ray]')")
pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def local_ray(training_env, tmp_path_factory):
    """A local Ray with 2 CPUs; its workers inherit a cache of their own."""
    with training_env(tmp_path_factory.mktemp("ray-cache")):
        quiet = ray.LoggingConfig(log_level="ERROR")  # as imgcls.cluster.connect starts one
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", logging_config=quiet)
        yield ray
        ray.shutdown()


def rows_by_path(path: Path) -> dict[str, dict]:
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a file is in the output twice"
    return by_path


def test_predict_on_ray_gives_the_local_engines_rows(local_ray, tiny_runs, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    files = [*iter_files([tiny_runs.data]), broken]
    local = tmp_path / "local.parquet"
    predict_to_file(onnx_predictor(tiny_runs.transfer), files, local)
    on_ray = tmp_path / "ray.parquet"
    args = ["predict", str(tiny_runs.transfer), str(tiny_runs.data), str(broken), "--output", str(on_ray)]
    result = CliRunner().invoke(app, [*args, "--engine", "ray", "--workers", "2", "--no-progress"])
    assert result.exit_code == 1, result.output  # one unreadable file
    expected, got = rows_by_path(local), rows_by_path(on_ray)
    assert got.keys() == expected.keys() and len(got) == len(files)
    for path, row in expected.items():
        assert got[path]["label"] == row["label"]
        assert got[path]["error"] == row["error"]
        if row["error"] is None:
            assert got[path]["dog"] == pytest.approx(row["dog"], abs=1e-6)
    assert got[str(broken)]["error"] and got[str(broken)]["label"] is None


def test_a_ray_rerun_adds_only_what_is_missing(local_ray, tiny_runs, tmp_path: Path) -> None:
    from imgcls.cluster.predict import predict_on_ray

    files = sorted(iter_files([tiny_runs.data]))
    output = tmp_path / "out.csv"
    predict_to_file(onnx_predictor(tiny_runs.transfer), files[:7], output)  # as if killed after 7
    summary = predict_on_ray(tiny_runs.transfer, files, output, workers=2)
    assert (summary.already_done, summary.predicted) == (7, len(files) - 7)
    assert sorted(rows_by_path(output)) == sorted(str(f) for f in files)


def test_predict_on_ray_needs_an_output_file(tiny_runs) -> None:
    result = CliRunner().invoke(app, ["predict", str(tiny_runs.transfer), str(tiny_runs.data), "--engine", "ray"])
    assert isinstance(result.exception, ImgclsError) and "--output" in str(result.exception)


def test_ray_train_with_two_workers_writes_an_ordinary_run(local_ray, cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=16, val=8)
    run = imgcls.train(
        data, "seed-basic-cnn", epochs=2, image_size=32, batch_size=8, engine="ray", workers=2,
        out=tmp_path / "runs", progress=False, report=False,
    )  # fmt: skip
    assert run.is_finished and run.options.engine == "ray" and run.options.workers == 2
    assert [(row["stage"], row["epoch"]) for row in run.history] == [("train", 1), ("train", 2)]
    assert all(row["val_loss"] is not None and row["loss"] is not None for row in run.history)
    last = torch.load(run.checkpoint("train", "last"), map_location="cpu", weights_only=True)
    assert last["global_step"] == 2 * 2  # 32 photos, 8 a step, shared by 2 workers: 2 steps an epoch each
    assert run.onnx_path.is_file() and onnx_predictor(run) is not None
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["seed-basic-cnn"]  # no NAME-2 folders


def test_ray_train_fine_tunes_a_transfer_recipe(local_ray, cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=8, val=4)
    run = imgcls.train(
        data, "transfer", epochs=1, image_size=64, fine_tune=True, fine_tune_epochs=1, fine_tune_image_size=64,
        batch_size=8, engine="ray", workers=2, out=tmp_path / "runs", progress=False, report=False,
    )  # fmt: skip
    assert [(row["stage"], row["epoch"]) for row in run.history] == [("head", 1), ("fine-tune", 1)]
    assert run.is_finished and run.spec.image_size == 64


def test_a_worker_error_is_one_clear_message(local_ray, cats_dogs_subset, tmp_path: Path) -> None:
    data = cats_dogs_subset("data", train=4, val=2)
    for photo in (data / "train" / "dog").iterdir():
        photo.unlink()
        photo.write_bytes(b"not a photo")
    with pytest.raises(ImgclsError, match="no readable training images for class"):
        imgcls.train(
            data, "seed-basic-cnn", epochs=1, image_size=32, engine="ray", workers=2,
            out=tmp_path / "runs", progress=False, report=False,
        )  # fmt: skip
    assert not any((tmp_path / "runs").glob("*/config.yaml")), "a run that trained nothing is removed"


def test_workers_need_the_ray_engine() -> None:
    with pytest.raises(ImgclsError, match="--engine ray"):
        imgcls.train("unused", "seed-basic-cnn", workers=2)


def test_an_address_where_no_cluster_answers_is_said_at_once(tiny_runs, tmp_path: Path) -> None:
    """Ray itself retries such an address for minutes; the command says so in a second."""
    import subprocess
    import sys

    imgcls_command = Path(sys.executable).with_name("imgcls")
    args = [str(imgcls_command), "predict", str(tiny_runs.transfer), str(tiny_runs.data), "--output"]
    args += [str(tmp_path / "out.csv"), "--engine", "ray", "--address", "127.0.0.1:1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.csv").exists()
