"""`imgcls train --engine ray --workers N`: the same Lightning training under Ray Train.

Ray Train's `TorchTrainer` starts N workers (one CPU each by default) and joins them in one
torch.distributed group (gloo); each runs the ordinary stage driver with Ray's Lightning strategy
(`RayDDPStrategy` + `RayLightningEnvironment`, see `training.steps.make_trainer`). This process
makes the run folder, the workers fill it (rank 0 writes, as under torchrun), and the result is an
ordinary run folder: evaluate, report, predict and serve it as any other. The batch size is per
worker, so a step sees `workers x batch_size` images, as with Lightning's own DDP.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from imgcls.cluster import connect
from imgcls.errors import ImgclsError, first_line
from imgcls.recipes import Recipe
from imgcls.run import Run, TrainOptions

WAIT_FOR_RANK_ZERO_S = 6 * 3600


def train_on_ray(data: str | Path | None, recipe: Recipe, options: TrainOptions) -> Run:
    """Train `recipe` on DATA with `options.workers` Ray Train workers into a new run folder."""
    ray = connect(options.address)
    run = Run.create(options.out, options.name or recipe.name)
    config = {"task": "train", "data": _absolute(data), "recipe": recipe, "options": _absolute_options(options)}
    try:
        _fit(ray, run, config, options.workers)
    except BaseException:
        run.discard()  # nothing trained: no empty run folder (one with checkpoints stays, for --resume)
        raise
    return run


def resume_on_ray(run: Run, options: TrainOptions) -> Run:
    """Continue an interrupted Ray run on Ray, with as many workers as it had."""
    ray = connect(options.address)
    _fit(ray, run, {"task": "resume", "run": str(run.path.resolve()), "progress": options.progress}, options.workers)
    return run


def _fit(ray, run: Run, config: dict[str, Any], workers: int) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError, WorkerGroupError
    from ray.train.torch import TorchConfig, TorchTrainer

    config["run"] = str(run.path.resolve())
    trainer = TorchTrainer(
        _worker,
        train_loop_config=config,
        # the other workers wait at a barrier while rank 0 trains a transfer head: allow hours, not 30 min
        torch_config=TorchConfig(backend="gloo", timeout_s=WAIT_FOR_RANK_ZERO_S),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=RunConfig(
            name=run.name,
            storage_path=str(run.ray_dir.resolve()),
            failure_config=FailureConfig(max_failures=0),  # a failed run says why; --resume continues it
        ),
    )
    try:
        trainer.fit()
    except WorkerGroupError as error:
        raise _explained(run, error.worker_failures) from None
    except TrainingFailedError as error:  # the controller itself (resources, scheduling)
        raise ImgclsError(f"Ray Train failed: {first_line(error)}") from None
    if not run.is_finished:
        raise ImgclsError(f"{run}: Ray Train ended without finishing the run; see the workers' messages above")


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the ordinary driver, joined to the run folder the caller made."""
    from imgcls.progress import console_logging, is_rank_zero
    from imgcls.run.folder import RUN_DIR_ENV
    from imgcls.training import driver

    os.environ[RUN_DIR_ENV] = config["run"]
    progress = config["options"].progress if config["task"] == "train" else config["progress"]
    logger = logging.getLogger("imgcls")
    logger.propagate = False  # Ray's handler on the root logger would print each message again
    if progress and is_rank_zero():
        console_logging()
    elif not is_rank_zero():
        logger.setLevel(logging.WARNING)  # rank 0 tells the stages; the others only their problems
    if config["task"] == "resume":
        driver.resume(config["run"], progress=progress and is_rank_zero())
        return
    options = dataclasses.replace(config["options"], progress=progress and is_rank_zero())
    driver.train(config["data"], config["recipe"], options, into=Run(config["run"]))


def _explained(run: Run, failures: dict[int, Exception]) -> ImgclsError:
    """The first worker's own message (an ImgclsError says what to do); else the exception, briefly."""
    rank, error = min(failures.items())
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the worker's exception
    if isinstance(cause, ImgclsError):
        return ImgclsError(str(cause))
    then = f"; continue it with: imgcls train --resume {run}" if run.has_checkpoints() else ""
    return ImgclsError(f"Ray Train worker {rank} failed: {type(cause).__name__}: {first_line(cause)}{then}")


def _absolute(data: str | Path | None) -> str | None:
    """Workers start in their own folders: a DATA that is a path goes to them absolute."""
    if data is None:
        return None
    return str(Path(data).resolve()) if Path(data).exists() else str(data)


def _absolute_options(options: TrainOptions) -> TrainOptions:
    changes: dict[str, Any] = {"out": options.out.resolve()}
    if options.data_dir is not None:
        changes["data_dir"] = options.data_dir.resolve()
    if options.labels is not None and options.labels.csv is not None:
        changes["labels"] = dataclasses.replace(options.labels, csv=Path(options.labels.csv).resolve())
    return dataclasses.replace(options, **changes)
