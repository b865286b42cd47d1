"""`--lr find`: Lightning's learning-rate finder (`Tuner.lr_find`) picks a stage's learning rate right
before the stage trains.

Which stage: the one whose recipe field says "find" (`TrainOptions.lr_find`): `lr` for a plain run's
`train` stage and for a transfer run's `head` (cached features, also a Lightning stage),
`fine_tune_lr` for `fine-tune`. The finder trains the stage's own module on its own batches for at
most MAX_STEPS steps (and at most one epoch of images), the rate rising exponentially from MIN_LR to
MAX_LR; Lightning then restores the weights from a temporary checkpoint, which goes to a hidden
scratch folder of the run and is removed. The suggestion is Lightning's, the steepest descent of the
smoothed loss, with the slope taken on the log-lr scale (see `suggest`). Without one (too few
batches, losses not finite, an early divergence) the recipe's rate stays. Either way the number goes
into config.yaml (the recipe, and `lr_find`) before the stage trains, beside the curve and its
points, so `--resume` and Lightning's DDP workers read it instead of searching again, and a run given
that number trains the same.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner

from imgcls.errors import ImgclsError
from imgcls.files import atomic_write_json, display_path
from imgcls.plots import plot_lr_find
from imgcls.progress import is_rank_zero
from imgcls.recipes import LR_FIELDS
from imgcls.training.module import ClassifierModule
from imgcls.training.steps import Job, interruption_error

log = logging.getLogger("imgcls")
MAX_STEPS = 100  # finder steps (Lightning's default): a few seconds on cached features
MIN_LR, MAX_LR = 1e-7, 1.0
SKIP_BEGIN, SKIP_END = 10, 1  # Lightning's suggestion leaves out the first 10 points and the last one
FIELD_OF_STAGE = {"train": "lr", "head": "lr", "fine-tune": "fine_tune_lr"}
SUGGESTED = "Lightning's suggestion: the steepest descent of the smoothed loss, on the log-lr scale"


@dataclass
class Finding:
    """What the finder tried (its points) and the rate chosen, with why."""

    stage: str
    lrs: list[float]
    losses: list[float | None]  # smoothed, as Lightning records them; None where not finite
    chosen: float
    suggested: bool  # False: the recipe's rate was kept
    why: str
    recipe_lr: float
    seconds: float

    @property
    def field(self) -> str:
        return FIELD_OF_STAGE[self.stage]

    def record(self) -> dict[str, Any]:
        """config.yaml's `lr_find.<stage>`."""
        return {
            "field": self.field,
            "lr": self.chosen,
            "suggested": self.suggested,
            "why": self.why,
            "recipe_lr": self.recipe_lr,
            "steps": len(self.lrs),
            "seconds": round(self.seconds, 3),
        }

    def points(self) -> dict[str, Any]:
        """The points file: every (lr, loss) the finder measured, and the choice."""
        return {
            "stage": self.stage,
            **self.record(),
            "min_lr": MIN_LR,
            "max_lr": MAX_LR,
            "lrs": self.lrs,
            "losses": self.losses,
        }


def choose_lr(job: Job, module: ClassifierModule, train_loader, stage: str, max_epochs: int | None = 1) -> None:
    """Set the stage's learning rate when its field asked for the finder: the rate recorded before
    (a resumed run, DDP workers), else the finder's. `max_epochs`: epochs of batches the finder may
    take (None: MAX_STEPS whatever the epoch, for cached features, whose steps cost microseconds)."""
    name = FIELD_OF_STAGE[stage]
    if name not in job.options.lr_find:
        return
    recorded = (job.run.config.get("lr_find") or {}).get(stage)
    if recorded is not None:
        _use(job, module, name, float(recorded["lr"]))
        log.info("stage %s: lr %.3g, as the learning-rate finder chose it before", stage, recorded["lr"])
        return
    if not is_rank_zero():
        raise ImgclsError(
            f"{LR_FIELDS[name]} find: the learning-rate finder runs in the first process before the others "
            "start, and config.yaml records no choice; give a number"
        )
    finding = find_lr(job, module, train_loader, stage, max_epochs)
    _use(job, module, name, finding.chosen)
    _save(job, finding)
    _say(job, finding)


def find_lr(job: Job, module: ClassifierModule, train_loader, stage: str, max_epochs: int | None) -> Finding:
    """Lightning's range test on `module` (its weights and optimiser state are restored afterwards)."""
    batches = len(train_loader)
    steps = MAX_STEPS if max_epochs is None else max(1, min(MAX_STEPS, batches * max_epochs))
    scratch = job.run.lr_find_path(stage, "scratch")
    shutil.rmtree(scratch, ignore_errors=True)  # what a killed finder left
    trainer = _finder_trainer(job, scratch, math.ceil(steps / batches))
    started = time.perf_counter()
    try:
        with _quiet():
            result = Tuner(trainer).lr_find(
                module,
                train_dataloaders=train_loader,
                min_lr=MIN_LR,
                max_lr=MAX_LR,
                num_training=steps,
                update_attr=False,
            )
    except SystemExit:  # Lightning answers Ctrl-C with sys.exit(1)
        if not trainer.interrupted:
            raise
        raise interruption_error(job) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    measured = min(len(result.results["lr"]), len(result.results["loss"]))  # lr and loss of the same steps
    lrs = [float(lr) for lr in result.results["lr"][:measured]]
    losses = [float(loss) if math.isfinite(loss) else None for loss in result.results["loss"][:measured]]
    recipe_lr = float(getattr(job.recipe, FIELD_OF_STAGE[stage]))
    suggestion, why = suggest(lrs, losses, steps, batches)
    chosen = recipe_lr if suggestion is None else suggestion
    return Finding(stage, lrs, losses, chosen, suggestion is not None, why, recipe_lr, time.perf_counter() - started)


def suggest(lrs: list[float], losses: list[float | None], planned: int, batches: int) -> tuple[float | None, str]:
    """Lightning's suggestion, the steepest descent of the smoothed loss leaving out the first 10
    points and the last, with the slope taken against log10(lr), the scale the finder samples on:
    Lightning 2.6 takes it against lr itself, which favours noise among the smallest rates (its
    issue #21141, PR #21171). Returns the rate, or None and why there is none."""
    needed = SKIP_BEGIN + SKIP_END + 2
    if len(losses) < needed:
        return None, _too_few_steps(len(losses), needed, planned, batches)
    kept = [
        (lr, loss)
        for lr, loss in zip(lrs[SKIP_BEGIN:-SKIP_END], losses[SKIP_BEGIN:-SKIP_END], strict=True)
        if loss is not None
    ]
    if len(kept) < 2:
        bad = sum(loss is None for loss in losses)
        return None, f"the loss was not finite (NaN or infinite) at {bad} of {len(losses)} steps"
    rates = torch.tensor([lr for lr, _ in kept], dtype=torch.float64)
    slopes = torch.gradient(torch.tensor([loss for _, loss in kept], dtype=torch.float64), spacing=[rates.log10()])[0]
    steepest = int(torch.argmin(slopes))
    if slopes[steepest] >= 0:
        return None, f"the loss never fell between {kept[0][0]:.0e} and {kept[-1][0]:.0e}"
    return float(f"{kept[steepest][0]:.3g}"), SUGGESTED  # the number as printed, to give it again


def _too_few_steps(steps: int, needed: int, planned: int, batches: int) -> str:
    if steps < planned:
        return f"the loss diverged after {_count(steps, 'step')}, before the {needed} a suggestion needs"
    return (
        f"only {_count(steps, 'step')}, as an epoch has {_count(batches, 'batch')}, and a suggestion needs "
        f"{needed} (use more photos or a smaller batch size)"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}{'es' if noun.endswith('ch') else 's'}"


def _finder_trainer(job: Job, scratch, epochs: int) -> L.Trainer:
    """One process, no callbacks, loggers or checkpoints of the run: only Lightning's own temporary
    checkpoint, in `scratch`."""
    return L.Trainer(
        max_epochs=epochs,
        accelerator=job.options.accelerator,
        devices=1,
        strategy="auto",
        num_nodes=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=scratch,
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """No validation loop, on purpose."""
    finder_log = logging.getLogger("lightning.pytorch.tuner.lr_finder")
    level = finder_log.level
    finder_log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*validation_step.*val_dataloader.*")
            yield
    finally:
        finder_log.setLevel(level)


def _use(job: Job, module: ClassifierModule, name: str, lr: float) -> None:
    """The rate in the job's recipe and in the module (its optimiser and its saved hyper-parameters)."""
    job.recipe = job.recipe.override(**{name: lr})
    module.recipe = {**module.recipe, name: lr}
    module.hparams["recipe"] = module.recipe


def _save(job: Job, finding: Finding) -> None:
    """The curve and its points, then config.yaml: its recipe holds the number from now on."""
    run = job.run
    atomic_write_json(run.lr_find_path(finding.stage, "points"), finding.points())
    title = f"{run.name}: learning-rate finder, stage {finding.stage}"
    plot_lr_find(
        finding.lrs, finding.losses, finding.chosen, finding.suggested, run.lr_find_path(finding.stage, "plot"), title
    )
    config = run.config
    recorded = {**(config.get("lr_find") or {}), finding.stage: finding.record()}
    # the run's start again, with the chosen rate (split and classes are rewritten as they were)
    run.write_start({**config, "recipe": job.recipe.as_dict(), "lr_find": recorded}, job.dataset)


def _say(job: Job, finding: Finding) -> None:
    curve = display_path(job.run.lr_find_path(finding.stage, "plot"))
    if finding.suggested:
        log.info(
            "learning-rate finder, stage %s: lr %.3g (%s), from %d steps between %.2g and %.2g in %.1f s; curve: %s",
            finding.stage,
            finding.chosen,
            finding.why,
            len(finding.lrs),
            finding.lrs[0],
            finding.lrs[-1],
            finding.seconds,
            curve,
        )
    else:
        log.warning(
            "learning-rate finder, stage %s: no suggestion: %s; keeping the recipe's lr %.3g; curve: %s",
            finding.stage,
            finding.why,
            finding.chosen,
            curve,
        )
