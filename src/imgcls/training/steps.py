"""Steps every training strategy shares: decode, load, fit one stage with Lightning, save the result."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from imgcls.augment import build_transform
from imgcls.data.cache import DecodedImages, DecodeSettings, decode_all
from imgcls.data.discover import Dataset
from imgcls.data.loaders import make_loader
from imgcls.errors import DataError, ImgclsError
from imgcls.files import atomic_path, display_path
from imgcls.metrics import classification_metrics
from imgcls.models.classifier import ModelSpec
from imgcls.plots import plot_confusion, plot_curves
from imgcls.recipes import Recipe
from imgcls.run import HeldOut, Run, TrainOptions
from imgcls.training.callbacks import (
    DIGEST_KEY,
    MONITORS,
    AtomicCheckpointIO,
    BestWeightsInMemory,
    HistoryWriter,
    InterruptCheckpoint,
    LatestCheckpoint,
    ValidationSchedule,
    epoch_progress_bar,
    tensor_digest,
    verify_digest,
)
from imgcls.training.loggers import log_result_files, make_loggers
from imgcls.training.module import ClassifierModule

log = logging.getLogger("imgcls")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no GPU/TPU banners or tips
# InterruptCheckpoint (an OnExceptionCheckpoint) makes Lightning read ckpt_path=None as "last", warning each run
warnings.filterwarnings("ignore", message=r".*ckpt_path.*", module="lightning")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # frozen backbone parts, on purpose
warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")  # other stages
# under Ray Train, rank 0 trains the transfer head alone inside the workers' process group: nothing to sync
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


@dataclass
class Job:
    """One training: where it writes, what it learns from, how, and with which run options."""

    run: Run
    dataset: Dataset
    recipe: Recipe
    options: TrainOptions
    loggers: list = field(default_factory=list)  # the current stage's experiment trackers (--logger)

    @property
    def eval_split(self) -> str:
        return self.dataset.eval_split


def decode_splits(job: Job, recipe: Recipe, write_skipped: bool = True) -> dict[str, DecodedImages]:
    """Decode every split once (cache-backed) at `recipe`'s size; report skipped files once."""
    settings = DecodeSettings((recipe.image_size, recipe.image_size), recipe.channels, recipe.resize)
    decoded = {}
    for name, samples in job.dataset.splits.items():
        title = f"Decoding {len(samples):,} {name} photos at {recipe.image_size} px" if job.options.progress else None
        decoded[name] = decode_all([s.path for s in samples], [s.label for s in samples], settings, progress=title)
    report_readable(job, {name: (split.labels, split.skipped) for name, split in decoded.items()}, write_skipped)
    return decoded


def report_readable(job: Job, splits: dict[str, tuple[torch.Tensor, list]], write_skipped: bool = True) -> None:
    """Warn once about skipped files (listed in the run); stop if a split or class has nothing left."""
    skipped = [error for _, split_skipped in splits.values() for error in split_skipped]
    run = job.run if write_skipped else None
    if run is not None:
        run.write_skipped(skipped)
    if skipped:
        where = " (listed in the run's skipped files)" if run is not None else ""
        log.warning("skipped %d unreadable image file(s)%s, e.g. %s", len(skipped), where, skipped[0])
    root = display_path(job.dataset.root)
    for name, (labels, _) in splits.items():
        if len(labels) == 0:
            raise DataError(f"{root}: no readable images in the {name} split")
    present = set(splits["train"][0].tolist())
    missing = [c for k, c in enumerate(job.dataset.classes) if k not in present]
    if missing:
        raise DataError(f"{root}: no readable training images for class(es) {missing}")


def image_loaders(decoded: dict[str, DecodedImages], recipe: Recipe, seed: int):
    transform = build_transform(recipe.augment, (recipe.image_size, recipe.image_size))
    train = decoded["train"]
    return (
        make_loader(train.images, train.labels, recipe.batch_size, shuffle=True, seed=seed, transform=transform),
        make_loader(decoded["val"].images, decoded["val"].labels, recipe.batch_size * 2, shuffle=False),
    )


def class_weights(labels: list[int] | torch.Tensor, n_classes: int) -> list[float]:
    """Inverse frequency, normalised so a balanced dataset gets weight 1 everywhere."""
    counts = Counter(labels.tolist() if isinstance(labels, torch.Tensor) else labels)
    total = sum(counts.values())
    return [total / (n_classes * max(counts.get(k, 0), 1)) for k in range(n_classes)]


def job_class_weights(job: Job, labels: torch.Tensor) -> list[float] | None:
    """`--class-weights auto`: inverse frequency of the readable training images' `labels`."""
    return class_weights(labels, len(job.dataset.classes)) if job.options.class_weights else None


def make_trainer(job: Job, stage: str, epochs: int, checkpoint_files: bool = True, single_process: bool = False):
    """A Trainer whose checkpoints are the run's `<stage>-best/last/interrupted.ckpt`; without
    `checkpoint_files` the best weights are kept in memory and restored at the end."""
    run, recipe, options = job.run, job.recipe, job.options
    if recipe.monitor not in MONITORS:
        raise ImgclsError(f"unknown monitor {recipe.monitor!r}: use {' or '.join(MONITORS)}")
    callbacks: list[L.Callback] = [HistoryWriter(run.history_path, stage)]
    if checkpoint_files:
        # always the run's names (no -v1 copies): written atomically, so overwriting is safe
        best = ModelCheckpoint(
            dirpath=run.checkpoints_dir,
            filename=run.checkpoint(stage, "best").stem,
            monitor=recipe.monitor,
            mode=MONITORS[recipe.monitor],
            enable_version_counter=False,
        )
        # every epoch, for --resume (Lightning >= 2.6 writes save_last only when the best one improves)
        last = LatestCheckpoint(run.checkpoint(stage, "last"), best)
        interrupted = InterruptCheckpoint(run.checkpoints_dir, run.checkpoint(stage, "interrupted").stem)
        callbacks += [best, last, interrupted]
    else:
        callbacks.append(BestWeightsInMemory(recipe.monitor))
    if recipe.early_stopping:
        callbacks.append(
            EarlyStopping(
                monitor=recipe.monitor,
                mode=MONITORS[recipe.monitor],
                patience=recipe.early_stopping,  # in validations: epochs without one are not counted
                check_on_train_epoch_end=False,
            )
        )
    first_validated = recipe.full_size_epoch if stage == "train" else 0  # progressive resizing: whole networks
    if recipe.val_every > 1 or first_validated:
        callbacks.append(ValidationSchedule(recipe.val_every, first_validated))
    if options.progress:
        callbacks.append(epoch_progress_bar())
    processes, plugins = _processes(options, single_process)
    job.loggers = make_loggers(run, options.logger, stage)
    if job.loggers:
        callbacks.append(LearningRateMonitor("step"))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=options.accelerator,
        **processes,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *plugins],
        logger=job.loggers or False,
        log_every_n_steps=1,  # with --logger: every step (the loss of each step, lr, images/s)
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        enable_checkpointing=checkpoint_files,  # else Lightning adds its own epoch=N-step=M.ckpt writer
        num_sanity_val_steps=0,
        default_root_dir=run.path,
    )
    if plugins:
        from ray.train.lightning import prepare_trainer

        trainer = prepare_trainer(trainer)
    return trainer


def _processes(options: TrainOptions, single_process: bool) -> tuple[dict[str, Any], list]:
    """Lightning's devices/strategy/nodes, and the plugins: Ray's environment under Ray Train."""
    if single_process:
        return {"devices": 1, "strategy": "auto", "num_nodes": 1}, []
    if options.engine == "ray":  # a Ray Train worker: Ray made the process group, Lightning joins it
        from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

        return {"devices": "auto", "strategy": RayDDPStrategy(), "num_nodes": 1}, [RayLightningEnvironment()]
    return {"devices": options.devices, "strategy": options.strategy, "num_nodes": options.num_nodes}, []


def run_trainer(job: Job, trainer: L.Trainer, module, loaders: tuple, stage: str, ckpt_path: Path | None) -> None:
    """`trainer.fit`, continuing from `ckpt_path` when given; an interruption says how to go on."""
    try:
        trainer.fit(module, *loaders, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning answers Ctrl-C by saving checkpoints/interrupted.ckpt and calling sys.exit(1)
        if not trainer.interrupted:
            raise
    if trainer.interrupted:
        raise interruption_error(job)


def interruption_error(job: Job) -> ImgclsError:
    """What to do after Ctrl-C: resume from the run's checkpoints, or, with none, start again."""
    if not job.run.has_checkpoints():  # nothing saved: the run folder goes (see driver.train)
        return ImgclsError("training interrupted before its first checkpoint; run the same command again")
    return ImgclsError(f"training interrupted; continue it with: imgcls train --resume {job.run}")


def load_best(module: ClassifierModule, checkpoint: Path) -> int | None:
    """The weights of the best epoch on `recipe.monitor` (the seeds' ModelCheckpoint(save_best_only=True));
    returns that epoch, counted from 1."""
    if not checkpoint.is_file():
        return None
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    module.load_state_dict(saved["state_dict"])
    return int(saved["epoch"]) + 1 if "epoch" in saved else None


def resume_point(job: Job, stage: str) -> Path | None:
    """The newest checkpoint `stage` can continue from that can be read; a damaged one (truncated,
    flipped bytes) is said and passed over for the older one."""
    found = job.run.resume_checkpoints(stage)
    for path in found:
        if read_checkpoint(path) is not None:
            return path
    if found:
        names = " and ".join(p.name for p in found)
        raise ImgclsError(f"{job.run}: {names} cannot be read (damaged); train this run again with `imgcls train`")
    return None


def read_checkpoint(path: Path) -> dict | None:
    """The checkpoint, when it loads and its tensors match the digest saved with them (see
    AtomicCheckpointIO); None, said in a warning, when it is damaged."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        problem = None if verify_digest(saved) else "its tensors do not match their digest"
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        saved, problem = None, str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    if problem:
        log.warning("%s cannot be read (%s); not using it", display_path(path), problem)
        return None
    return saved


def save_stage(path: Path, module: ClassifierModule, score: float | None, epoch: int | None) -> None:
    """A finished stage's weights and score, atomically: `--resume` then skips the stage."""
    saved = {"state_dict": module.state_dict(), "score": score, "epoch": epoch}
    with atomic_path(path) as temporary:
        torch.save({**saved, DIGEST_KEY: tensor_digest(saved)}, temporary)


def load_stage(path: Path, module: ClassifierModule) -> tuple[float | None, int | None] | None:
    """A finished stage's score and epoch, its weights loaded into `module`; None when there is no
    intact checkpoint of it (the stage then runs again)."""
    saved = read_checkpoint(path) if path.is_file() else None
    if saved is None:
        return None
    module.load_state_dict(saved["state_dict"])
    return saved.get("score"), saved.get("epoch")


def finish_run(job: Job, model: torch.nn.Module, spec: ModelSpec, probs, held_out, kept: dict) -> None:
    """Curves and confusion plots, then the model files (safetensors + JSON), metrics on test (else val)
    and `kept` in config.yaml: a run whose config has `kept` is complete. `probs` are the model's on
    `held_out` (decoded images or features: labels, paths and skipped files of that split)."""
    run, split = job.run, job.eval_split
    labels = held_out.labels.numpy()
    metrics = {"split": split, **classification_metrics(probs, labels, spec.classes)}
    spec.metrics = {"accuracy": metrics["accuracy"], "loss": metrics["loss"], "split": split}
    kept = {**kept, "image_size": spec.image_size, "monitor": job.recipe.monitor}
    history = run.history
    if history:
        plot_curves(history, run.curves_path, title=f"{run.name}: {spec.architecture}")
    plot_confusion(
        metrics["confusion_matrix"],
        spec.classes,
        run.confusion_path,
        title=f"Confusion matrix ({split}, accuracy {metrics['accuracy']:.1%})",
    )
    remembered = HeldOut(probs, labels, list(held_out.paths), list(held_out.skipped))
    run.write_result(model.cpu().eval(), spec, metrics, kept, remembered)  # last: a run with `kept` is complete
    log_result_files(job.loggers, [run.curves_path, run.confusion_path, run.metrics_path])
    log.info("kept the model of stage %s, epoch %s, at %d px", kept.get("stage"), kept.get("epoch"), spec.image_size)
