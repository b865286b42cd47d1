"""From DATA and a recipe to a finished run folder: decode once, fit with Lightning, save, evaluate."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from imgcls import runs
from imgcls.augment import build_transform
from imgcls.data.cache import DecodedImages, DecodeSettings, decode_all
from imgcls.data.decode import display_path
from imgcls.data.discover import Dataset, discover, load_manifest
from imgcls.data.labels import LabelOptions
from imgcls.data.loaders import make_loader
from imgcls.errors import DataError, ImgclsError
from imgcls.evaluation import classification_metrics, predict_probabilities
from imgcls.models.classifier import ModelSpec, save_model
from imgcls.models.registry import accepts
from imgcls.recipes import Recipe
from imgcls.training.callbacks import MONITORS, BestWeightsInMemory, HistoryWriter, InterruptCheckpoint, read_history
from imgcls.training.module import ClassifierModule
from imgcls.visual.plots import plot_confusion, plot_curves

log = logging.getLogger("imgcls")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no GPU/TPU banners or tips
# InterruptCheckpoint (an OnExceptionCheckpoint) makes Lightning read ckpt_path=None as "last", warning each run
warnings.filterwarnings("ignore", message=r".*ckpt_path.*", module="lightning")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # frozen backbone parts, on purpose


@dataclass
class TrainOptions:
    """Settings of one training run that are not part of the recipe."""

    out: Path = Path("runs")
    name: str | None = None
    seed: int = 0
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"
    class_weights: str | None = None  # "auto": inverse class frequency
    data_dir: Path | None = None  # where to look for a built-in dataset
    labels: LabelOptions | None = None  # file names or a CSV instead of class folders
    progress: bool = True
    report: bool = True  # write report.html at the end (a failure there is a warning, not a failed training)


def train(data: str | Path, recipe: Recipe, options: TrainOptions | None = None) -> Path:
    """Train `recipe` on DATA; returns the run folder (config, model, history, metrics, plots)."""
    options = options or TrainOptions()
    dataset = discover(
        data, recipe.val_split, options.seed, options.data_dir, progress=options.progress, labels=options.labels
    )
    run = runs.create_run_dir(Path(options.out), options.name or recipe.name)
    if _is_rank_zero():
        runs.write_config(run, _config(data, dataset, recipe, options))
        runs.write_json(run / "split.json", dataset.split_manifest())
        runs.write_json(run / "classes.json", dataset.classes)
    try:
        return _reported(_fit(run, dataset, recipe, options, ckpt_path=None), options)
    except ImgclsError:
        if _is_rank_zero() and not (run / "checkpoints").exists():
            shutil.rmtree(run, ignore_errors=True)  # stopped before training (e.g. missing weights): no empty run
        raise


def resume(run: Path | str, progress: bool = True) -> Path:
    """Continue an interrupted run from its newest checkpoint, in the same folder, same split."""
    run = runs.resolve_run(run)
    config = runs.read_config(run)
    checkpoint = newest_checkpoint(run)
    if checkpoint is None:
        raise ImgclsError(f"{run}: no checkpoint to resume from (checkpoints/last.ckpt is missing)")
    os.environ[runs.RUN_DIR_ENV] = str(run)
    saved = {k: v for k, v in config["options"].items() if k != "labels"}  # the split comes from split.json
    options = TrainOptions(**{**saved, "out": run.parent, "name": run.name, "progress": progress})
    dataset = load_manifest(run / "split.json")
    return _reported(_fit(run, dataset, Recipe.from_dict(config["recipe"]), options, ckpt_path=checkpoint), options)


def _reported(run: Path, options: TrainOptions) -> Path:
    """report.html for the finished run, once (rank zero); see `imgcls.visual.report`."""
    if options.report and _is_rank_zero():
        from imgcls.visual.report import write_report_safely

        write_report_safely(run)
    return run


def newest_checkpoint(run: Path) -> Path | None:
    candidates = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name.endswith(("last.ckpt", "interrupted.ckpt"))]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def _fit(run: Path, dataset: Dataset, recipe: Recipe, options: TrainOptions, ckpt_path: Path | None) -> Path:
    if recipe.model == "transfer":
        from imgcls.training.transfer import fit_transfer

        return fit_transfer(run, dataset, recipe, options)
    L.seed_everything(options.seed, workers=True, verbose=False)
    decoded = decode_splits(dataset, recipe, run if _is_rank_zero() else None)
    spec = model_spec(recipe, dataset.classes)
    train_loader, val_loader = image_loaders(decoded, recipe, options.seed)
    module = ClassifierModule(
        spec=dataclasses.asdict(spec),
        recipe=recipe.as_dict(),
        steps_per_epoch=len(train_loader),
        class_weights=class_weights(decoded["train"].labels, len(dataset.classes)) if options.class_weights else None,
    )
    trainer = make_trainer(run, recipe, options, "train", recipe.epochs)
    run_trainer(trainer, module, train_loader, val_loader, run, ckpt_path)
    try:
        if trainer.is_global_zero:
            load_best(module, run / "checkpoints" / "best.ckpt")
            split = "test" if "test" in decoded else "val"
            probs = predict_probabilities(module.model.cpu(), spec.output, decoded[split].images)
            finish_run(run, module.model, spec, probs, decoded[split].labels.numpy(), split)
    finally:
        trainer.strategy.barrier("imgcls-finish-run")  # DDP: other ranks return once the run is complete
    return run


def image_loaders(decoded: dict[str, DecodedImages], recipe: Recipe, seed: int):
    transform = build_transform(recipe.augment, (recipe.image_size, recipe.image_size))
    train = decoded["train"]
    return (
        make_loader(train.images, train.labels, recipe.batch_size, shuffle=True, seed=seed, transform=transform),
        make_loader(decoded["val"].images, decoded["val"].labels, recipe.batch_size * 2, shuffle=False),
    )


def make_trainer(
    run: Path, recipe: Recipe, options: TrainOptions, stage: str, epochs: int, checkpoint_files: bool = True
) -> L.Trainer:
    """A Trainer whose checkpoints are `<stage>-best/last.ckpt` ("best"/"last" for plain training);
    without `checkpoint_files` the best weights are kept in memory and restored at the end."""
    if recipe.monitor not in MONITORS:
        raise ImgclsError(f"unknown monitor {recipe.monitor!r}: use {' or '.join(MONITORS)}")
    prefix = "" if stage == "train" else f"{stage}-"
    checkpoints = run / "checkpoints"
    callbacks: list[L.Callback] = [HistoryWriter(run / "history.csv", stage)]
    if checkpoint_files:
        best = ModelCheckpoint(
            dirpath=checkpoints,
            filename=f"{prefix}best",
            monitor=recipe.monitor,
            mode=MONITORS[recipe.monitor],
            save_last=True,
        )
        best.CHECKPOINT_NAME_LAST = f"{prefix}last"
        callbacks += [best, InterruptCheckpoint(checkpoints, f"{prefix}interrupted")]
    else:
        callbacks.append(BestWeightsInMemory(recipe.monitor))
    if recipe.early_stopping:
        callbacks.append(
            EarlyStopping(monitor=recipe.monitor, mode=MONITORS[recipe.monitor], patience=recipe.early_stopping)
        )
    if options.progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    return L.Trainer(
        max_epochs=epochs,
        accelerator=options.accelerator,
        devices=options.devices,
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=options.progress,
        enable_model_summary=False,
        enable_checkpointing=checkpoint_files,  # else Lightning adds its own epoch=N-step=M.ckpt writer
        num_sanity_val_steps=0,
        default_root_dir=run,
    )


def run_trainer(trainer: L.Trainer, module, train_loader, val_loader, run: Path, ckpt_path: Path | None) -> None:
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning answers Ctrl-C by saving checkpoints/interrupted.ckpt and calling sys.exit(1)
        if not trainer.interrupted:
            raise
    if trainer.interrupted:
        if newest_checkpoint(run) is None:
            raise ImgclsError("training interrupted before its first checkpoint; run the same command again")
        raise ImgclsError(f"training interrupted; continue it with: imgcls train --resume {run}")


def load_best(module: ClassifierModule, checkpoint: Path) -> None:
    """The weights of the best epoch on `recipe.monitor` (the seeds' ModelCheckpoint(save_best_only=True))."""
    if checkpoint.is_file():
        module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])


def decode_splits(dataset: Dataset, recipe: Recipe, run: Path | None) -> dict[str, DecodedImages]:
    """Decode every split once (cache-backed); report skipped files once, with their count."""
    settings = DecodeSettings((recipe.image_size, recipe.image_size), recipe.channels, recipe.resize)
    decoded = {
        name: decode_all([s.path for s in samples], [s.label for s in samples], settings)
        for name, samples in dataset.splits.items()
    }
    report_readable(dataset, {name: (split.labels, split.skipped) for name, split in decoded.items()}, run)
    return decoded


def report_readable(dataset: Dataset, splits: dict[str, tuple[torch.Tensor, list]], run: Path | None) -> None:
    """Warn once about skipped files (listed in the run); stop if a split or class has nothing left."""
    skipped = [error for _, split_skipped in splits.values() for error in split_skipped]
    if run is not None:
        runs.write_skipped(run, skipped)
    if skipped:
        where = f" (listed in {run / 'skipped_files.txt'})" if run is not None else ""
        log.warning("skipped %d unreadable image file(s)%s, e.g. %s", len(skipped), where, skipped[0])
    for name, (labels, _) in splits.items():
        if len(labels) == 0:
            raise DataError(f"{display_path(dataset.root)}: no readable images in the {name} split")
    present = set(splits["train"][0].tolist())
    missing = [c for k, c in enumerate(dataset.classes) if k not in present]
    if missing:
        raise DataError(f"{display_path(dataset.root)}: no readable training images for class(es) {missing}")


def model_spec(recipe: Recipe, classes: list[str]) -> ModelSpec:
    binary = len(classes) == 2 and recipe.head in ("auto", "binary")
    args = dict(recipe.model_args)
    if accepts(recipe.model, "image_size"):
        args.setdefault("image_size", recipe.image_size)
    return ModelSpec(
        architecture=recipe.model,
        classes=list(classes),
        image_size=recipe.image_size,
        channels=recipe.channels,
        arch_args=args,
        mean=recipe.mean,
        std=recipe.std,
        resize=recipe.resize,
        output="sigmoid" if binary else "softmax",
        flip_tta=recipe.flip_tta,
    )


def class_weights(labels: torch.Tensor, n_classes: int) -> list[float]:
    """Inverse frequency, normalised so a balanced dataset gets weight 1 everywhere."""
    counts = Counter(labels.tolist())
    total = sum(counts.values())
    return [total / (n_classes * max(counts.get(k, 0), 1)) for k in range(n_classes)]


def finish_run(run: Path, model: torch.nn.Module, spec: ModelSpec, probs, labels, split: str) -> None:
    """Model files (safetensors + JSON), metrics on test (else val), curves and confusion plots."""
    metrics = {"split": split, **classification_metrics(probs, labels, spec.classes)}
    spec.metrics = {"accuracy": metrics["accuracy"], "loss": metrics["loss"], "split": split}
    save_model(run, model.cpu().eval(), spec)
    runs.write_json(run / "metrics.json", metrics)
    history = read_history(run / "history.csv")
    if history:
        plot_curves(history, run / "curves.png", title=f"{run.name}: {spec.architecture}")
    plot_confusion(
        metrics["confusion_matrix"],
        spec.classes,
        run / "confusion_matrix.png",
        title=f"Confusion matrix ({split}, accuracy {metrics['accuracy']:.1%})",
    )


def _config(data: str | Path, dataset: Dataset, recipe: Recipe, options: TrainOptions) -> dict[str, Any]:
    option_values = {k: v for k, v in vars(options).items() if k not in ("out", "name", "progress", "report")}
    option_values["labels"] = options.labels.as_dict() if options.labels else None
    return {
        "data": {
            "argument": str(data),
            "root": dataset.root,
            "split": dataset.source,
            "counts": dataset.counts(),
            "classes": dataset.classes,
        },
        "recipe": recipe.as_dict(),
        "options": option_values,
        "torch": str(torch.__version__),
        "lightning": str(L.__version__),
    }


def _is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
