"""The stage driver: from DATA and a recipe to a finished `Run`, and `--resume` of an interrupted one.

    train / resume  ->  strategy (plain: "train" | transfer: "head" -> "fine-tune")  ->  shared steps

Every stage takes its own checkpoint, so `resume` continues whichever stage was interrupted and
never recomputes one that finished. The driver writes the run's start (config, split, classes);
the strategy writes its result (`steps.finish_run`).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch

from imgcls.cpu import keep_freed_memory
from imgcls.data.discover import Dataset, discover
from imgcls.errors import ImgclsError
from imgcls.files import FULL_DISK, describe_os_error
from imgcls.progress import is_rank_zero
from imgcls.recipes import Recipe
from imgcls.run import Run, TrainOptions
from imgcls.run.folder import RUN_DIR_ENV
from imgcls.training.budget import budget_applies, plan
from imgcls.training.plain import fit_plain
from imgcls.training.steps import Job
from imgcls.training.transfer import fit_transfer

Strategy = Callable[[Job, bool], None]
STRATEGIES: dict[str, Strategy] = {"transfer": fit_transfer}  # by recipe.model; anything else trains whole


def strategy_for(recipe: Recipe) -> Strategy:
    return STRATEGIES.get(recipe.model, fit_plain)


def train(data: str | Path | None, recipe: Recipe, options: TrainOptions | None = None, into: Run | None = None) -> Run:
    """Train `recipe` on DATA into a new run folder (config, model, history, metrics, plots), or `into`
    an empty one made for it (by `imgcls.cluster`, whose workers all join it)."""
    keep_freed_memory()
    options = options or TrainOptions()
    started = options.clock_start or time.perf_counter()
    dataset = discover(
        data, recipe.val_split, options.seed, options.data_dir, progress=options.progress, labels=options.labels
    )
    budget, choice = budget_applies(recipe, options, dataset), None
    if budget:
        recipe, choice = plan(dataset, recipe, budget, started)
    run = into or Run.create(options.out, options.name or recipe.name)
    job = Job(run, dataset, recipe, options)
    try:
        with failed_writes_explained(job):
            if is_rank_zero():
                run.write_start(
                    run_config(data, dataset, recipe, options) | ({"budget": choice} if choice else {}), dataset
                )
            strategy_for(recipe)(job, False)
    except ImgclsError:
        if is_rank_zero():
            run.discard()  # stopped before training anything (e.g. missing weights): no empty run
        raise
    return run


def resume(path: Run | Path | str, progress: bool = True) -> Run:
    """Continue an interrupted run in its own folder, on its own split, from the stage it was in."""
    keep_freed_memory()
    run = Run.open(path)
    if run.is_finished:
        raise ImgclsError(f"{run}: this run has finished; train a new one (`imgcls train`), nothing to resume")
    os.environ[RUN_DIR_ENV] = str(run.path)  # DDP workers join this folder
    options = dataclasses.replace(run.options, progress=progress)
    job = Job(run, run.dataset, run.recipe, options)
    with failed_writes_explained(job):
        strategy_for(job.recipe)(job, True)
    return run


@contextmanager
def failed_writes_explained(job: Job) -> Iterator[None]:
    """A failed write (full disk, read-only folder) becomes one message: which file, how much room is
    left, what the run folder still holds and what to run next. Every write is atomic, so the last
    good state (checkpoints, history) is intact."""
    try:
        yield
    except OSError as error:
        if error.errno not in (*FULL_DISK, errno.EROFS):
            raise
        if job.run.has_checkpoints():
            then = f"the run keeps its last good checkpoint: make room, then run: imgcls train --resume {job.run}"
        else:
            then = "nothing was trained yet: make room, then run the same command again"
        raise ImgclsError(f"could not write {describe_os_error(error)}; {then}") from None


def run_config(data: Any, dataset: Dataset, recipe: Recipe, options: TrainOptions) -> dict[str, Any]:
    return {
        "data": {
            "argument": None if data is None else str(data),
            "root": dataset.root,
            "split": dataset.source,
            "counts": dataset.counts(),
            "classes": dataset.classes,
        },
        "recipe": recipe.as_dict(),
        "options": options.as_dict(),
        "torch": str(torch.__version__),
        "lightning": str(L.__version__),
    }
