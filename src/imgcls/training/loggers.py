"""Experiment trackers through Lightning's own loggers: `imgcls train --logger csv|tensorboard|mlflow`.

Each stage of a run logs as its own version (`head`, `fine-tune`, `train`): every stage starts
counting steps at 0. CSV and TensorBoard files go into RUN/logs/<logger>/<stage>/; MLflow uses a
local file store beside the run folders (`OUT/mlruns`; one experiment per recipe, one MLflow run per
stage) unless `MLFLOW_TRACKING_URI` names a server or database. Hyper-parameters (the recipe and model spec)
are logged by Lightning; metrics per epoch (loss, accuracy, val_loss, val_accuracy) and per step
(training loss, images/s); when the run is finished, MLflow also gets the curves, the confusion
matrix and metrics.json as artefacts. The run's own history.csv is written as always.

A new tracker is one entry in LOGGERS: a function from (run, stage) to a Lightning logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from imgcls.errors import ImgclsError
from imgcls.run import Run

logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)  # "Experiment ... Creating it."


def _csv(run: Run, stage: str) -> Logger:
    return CSVLogger(run.logs_dir, name="csv", version=stage)


def _tensorboard(run: Run, stage: str) -> Logger:
    try:
        return TensorBoardLogger(run.logs_dir, name="tensorboard", version=stage, default_hp_metric=False)
    except ModuleNotFoundError:
        raise ImgclsError("--logger tensorboard needs TensorBoard: pip install tensorboard") from None


def _mlflow(run: Run, stage: str) -> Logger:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # a local store needing no server or database (MLflow 3 asks to opt in to it)
        uri = (run.path.parent.resolve() / "mlruns").as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        return MLFlowLogger(
            experiment_name=run.recipe.name, run_name=f"{run.name}/{stage}", tracking_uri=uri, log_model=False
        )
    except ModuleNotFoundError:
        raise ImgclsError("--logger mlflow needs MLflow: pip install mlflow-skinny") from None


LOGGERS: dict[str, Callable[[Run, str], Logger]] = {"csv": _csv, "tensorboard": _tensorboard, "mlflow": _mlflow}


def check_logger_names(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise ImgclsError(f"--logger {unknown[0]!r}: use {', '.join(LOGGERS)}")


def make_loggers(run: Run, names: tuple[str, ...], stage: str) -> list[Logger]:
    check_logger_names(names)
    return [LOGGERS[name](run, stage) for name in names]


def log_result_files(loggers: list[Logger], files: list[Path]) -> None:
    """The finished run's figures and metrics as MLflow artefacts (the other loggers have the numbers)."""
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in files:
                if path.is_file():
                    logger.experiment.log_artifact(logger.run_id, str(path))
