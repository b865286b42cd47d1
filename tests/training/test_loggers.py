"""`--logger csv|tensorboard|mlflow`: Lightning's loggers write what the run's history says, read
back with each tracker's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest

import imgcls
from imgcls.errors import ImgclsError

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def logged_run(cats_dogs_tree, training_env, tmp_path_factory):
    pytest.importorskip("tensorboard", reason="pip install 'imgcls[trackers]'")
    pytest.importorskip("mlflow", reason="pip install 'imgcls[trackers]'")
    root = tmp_path_factory.mktemp("loggers")
    data = cats_dogs_tree(root / "data", train=8, val=4)
    with training_env(root / "cache") as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return imgcls.train(
            data, "seed-basic-cnn", epochs=2, image_size=32, batch_size=4, out=root / "runs",
            logger=["csv", "tensorboard", "mlflow"], progress=False, report=False,
        )  # fmt: skip


def test_tensorboard_events_hold_the_history(logged_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = logged_run.logs_dir / "tensorboard" / "train"
    assert list(folder.glob("events.out.tfevents*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    logged = [event.value for event in events.Scalars("val_loss")]
    assert logged == pytest.approx([row["val_loss"] for row in logged_run.history], rel=1e-5)
    assert "step_loss" in events.Tags()["scalars"] and "lr-Adam" in events.Tags()["scalars"]


def test_mlflow_has_metrics_parameters_and_artefacts(logged_run) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient((Path(logged_run.path).parent / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("seed-basic-cnn")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "seed-basic-cnn/train" and found.info.status == "FINISHED"
    logged = [m.value for m in client.get_metric_history(found.info.run_id, "val_accuracy")]
    assert logged == pytest.approx([row["val_accuracy"] for row in logged_run.history])
    assert found.data.params["recipe/name"] == "seed-basic-cnn"
    files = {item.path for item in client.list_artifacts(found.info.run_id)}
    assert {"curves.png", "confusion_matrix.png", "metrics.json"} <= files


def test_csv_logger_beside_the_history(logged_run) -> None:
    import csv

    with (logged_run.logs_dir / "csv" / "train" / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    validated = [float(row["val_loss"]) for row in rows if row["val_loss"]]
    assert validated == pytest.approx([row["val_loss"] for row in logged_run.history], rel=1e-5)
    assert sum(bool(row["step_loss"]) for row in rows) == 2 * 4  # 16 photos, 4 a step, 2 epochs
    assert logged_run.options.logger == ("csv", "tensorboard", "mlflow")  # recorded in config.yaml


def test_an_unknown_logger_is_named() -> None:
    with pytest.raises(ImgclsError, match="--logger 'wandb': use csv, tensorboard, mlflow"):
        imgcls.train("unused", "seed-basic-cnn", logger="wandb")
