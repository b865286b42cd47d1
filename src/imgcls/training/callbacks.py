"""Callbacks of every training stage: history rows, best weights kept in memory, Ctrl-C checkpoints, 1-based epochs."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Checkpoint,
    ModelCheckpoint,
    OnExceptionCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.plugins.io import TorchCheckpointIO

from imgcls.files import atomic_path
from imgcls.progress import in_notebook
from imgcls.run import read_history, write_history


class HistoryWriter(L.Callback):
    """One history.csv row per epoch (rank 0 only), epochs counted from 1, written when the epoch's
    validation ends (or the epoch, when it is not validated; its val columns stay empty): before
    that epoch's checkpoints, so a run killed in between redoes the epoch instead of losing its row.
    On resume, rows from the checkpoint's epoch on are dropped."""

    def __init__(self, path: Path, stage: str = "train"):
        self.path = path
        self.stage = stage
        self.rows: list[dict] = []
        self._epoch_started = 0.0
        self._images = 0  # trained on in this process this epoch (a resumed epoch counts only its rest)
        self._validated = -1  # the last epoch (0-based) whose validation wrote its row

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.perf_counter()  # resuming mid-epoch skips on_train_epoch_start
        if not trainer.is_global_zero:
            return
        done = trainer.current_epoch  # epochs 1..done are complete
        self.rows = [
            row for row in read_history(self.path) if row.get("stage", "train") != self.stage or row["epoch"] <= done
        ]
        write_history(self.path, self.rows)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._images += len(batch[1]) * trainer.world_size

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("val_loss", "val_accuracy")}
        self._validated = trainer.current_epoch
        self._write_row(trainer, pl_module, validation)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """An epoch without validation (`val_every`, progressive resizing) still gets its row."""
        if self._validated != trainer.current_epoch:  # the same on every rank: all of them reduce the totals
            self._write_row(trainer, pl_module, {})

    def _write_row(self, trainer: L.Trainer, pl_module: L.LightningModule, validation: dict[str, float]) -> None:
        # from the module's totals: they cover the whole epoch even when it was resumed midway
        train_metrics = pl_module.train_epoch_metrics()
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._epoch_started
        self.rows.append(
            {
                "stage": self.stage,
                "epoch": trainer.current_epoch + 1,
                **train_metrics,
                **validation,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
                "seconds": seconds,
                "train_images_per_s": self._images / seconds if self._images else None,
            }
        )
        write_history(self.path, self.rows)


class ValidationSchedule(L.Callback):
    """Validation every `every` epochs from epoch `first` (0-based) on, and at the last epoch: the
    kept model is the best validated one, and with a one-cycle schedule the last is usually it.
    Epochs before `first` (progressive resizing's smaller sizes) are not validated: at the full
    size, a model trained on smaller images scores near chance until it has trained at that size."""

    def __init__(self, every: int = 1, first: int = 0):
        self.every, self.first = max(1, every), first

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a run resumed mid-epoch skips that epoch's start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        due = epoch >= self.first and (epoch + 1 - self.first) % self.every == 0
        # Lightning validates when (epoch + 1) % check_val_every_n_epoch == 0
        trainer.check_val_every_n_epoch = 1 if (last or due) else epoch + 2


class InterruptCheckpoint(OnExceptionCheckpoint):
    """`interrupted.ckpt` on Ctrl-C, but only while the epoch has training batches left: Lightning
    resumes a checkpoint taken once the last batch has started as a finished epoch, without
    validating it. Later interruptions resume from the last epoch-end checkpoint instead."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):  # a failed write or a bug: the last epoch's stays
            return
        started = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # what Lightning's resume counts
        if started < trainer.num_training_batches:
            super().on_exception(trainer, pl_module, exception)


class LatestCheckpoint(Checkpoint):
    """`last.ckpt` at every epoch's end, for --resume. When `best` was written at this very step,
    last.ckpt becomes a hard link to it: one checkpoint write an epoch, not two (seed-basic-cnn's
    weights and Adam state are 127 MB). A Checkpoint, so Lightning runs it after `best`."""

    def __init__(self, path: Path, best: ModelCheckpoint):
        self.path, self.best = Path(path), best

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        best_file = Path(self.best.best_model_path) if self.best.best_model_path else None
        just_saved = getattr(self.best, "_last_global_step_saved", None) == trainer.global_step
        if not (just_saved and best_file is not None and best_file.is_file()):
            trainer.save_checkpoint(self.path)  # every rank calls it; rank 0 writes, atomically
        elif trainer.is_global_zero:
            with atomic_path(self.path) as temporary:
                temporary.unlink(missing_ok=True)
                os.link(best_file, temporary)


MONITORS = {"val_loss": "min", "val_accuracy": "max"}  # what "best epoch" can mean, and its direction


def is_better(score: float, best: float | None, monitor: str) -> bool:
    """Whether `score` beats `best` (None: nothing yet) on `monitor`."""
    if best is None:
        return True
    return score < best if MONITORS[monitor] == "min" else score > best


class BestWeightsInMemory(L.Callback):
    """Keeps a copy of the best weights on `monitor` in memory and restores them when fitting ends.

    For the head stage, which trains in seconds: writing a checkpoint file every epoch would
    cost more than the training itself."""

    def __init__(self, monitor: str = "val_loss"):
        self.monitor = monitor
        self.best_score: float | None = None
        self.best_epoch: int | None = None  # from 1
        self.best_state: dict | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or score is None or not is_better(float(score), self.best_score, self.monitor):
            return
        self.best_score, self.best_epoch = float(score), trainer.current_epoch + 1
        self.best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar with epochs counted from 1, as history.csv and curves.png count them."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"


class NotebookEpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar for Jupyter, one line per epoch counted from 1 (give it leave=True).

    Rich's live bar needs ipywidgets in a notebook (without them: a warning, then nothing until it is
    done). A notebook redraws tqdm's line in place, but not a second bar under it (cursor moves), so
    validation gets none: its numbers join the epoch's line when it ends."""

    def on_train_start(self, *_) -> None:
        self.train_progress_bar = Tqdm(disable=True)  # each epoch opens its own line

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)


def epoch_progress_bar() -> ProgressBar:
    """The training bar: rich's in a terminal, tqdm's in a notebook; one bar per epoch, kept."""
    return NotebookEpochProgressBar(leave=True) if in_notebook() else EpochProgressBar(leave=True)


DIGEST_KEY = "imgcls_sha256"


def tensor_digest(value) -> str:
    """sha256 over every tensor of a checkpoint (and where it sits): torch.load checks no checksum, so
    flipped bytes inside the weights would otherwise load as wrong numbers."""
    digest = hashlib.sha256()

    def visit(item, where: str) -> None:
        if isinstance(item, torch.Tensor):
            digest.update(f"{where}|{item.dtype}|{tuple(item.shape)}".encode())
            digest.update(item.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                if key != DIGEST_KEY:
                    visit(item[key], f"{where}/{key}")
        elif isinstance(item, (list, tuple)):
            for index, element in enumerate(item):
                visit(element, f"{where}/{index}")

    visit(value, "")
    return digest.hexdigest()


def verify_digest(checkpoint: dict) -> bool:
    """False when the checkpoint carries a digest its tensors no longer match."""
    expected = checkpoint.get(DIGEST_KEY)
    return expected is None or expected == tensor_digest(checkpoint)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed into place, with a digest of their tensors:
    a kill while saving leaves the previous checkpoint, and a damaged one is recognised on resume."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        checkpoint = {**checkpoint, DIGEST_KEY: tensor_digest(checkpoint)}
        with atomic_path(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)
