"""The LightningModule: loss, accuracy, optimiser and schedule for any registry network."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateFinder, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from imgcls.augment import Augment, build_batch_mix
from imgcls.models.classifier import ModelSpec, build_classifier
from imgcls.recipes import Recipe

STAGES = ("train", "head", "fine-tune")  # whole network | head on cached features | unfrozen backbone


class ClassifierModule(L.LightningModule):
    """Trains an `ImageClassifier`; `spec` and `recipe` are plain dicts so checkpoints load
    with `weights_only=True`. In stage "head" the batches are cached backbone features."""

    def __init__(
        self,
        spec: dict[str, Any],
        recipe: dict[str, Any],
        steps_per_epoch: int,
        class_weights: list[float] | None = None,
        stage: str = "train",
    ):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        super().__init__()
        self.save_hyperparameters()
        self.spec = ModelSpec.from_dict(spec)
        self.recipe = recipe
        self.stage = stage
        # MixUp/CutMix and progressive resizing, for stage "train" alone (`training_batch`)
        self.mix = build_batch_mix(Augment.from_dict(recipe.get("augment")), len(self.spec.classes))
        self.sizes = Recipe.from_dict(recipe) if recipe.get("progressive_from") else None
        self.model = build_classifier(self.spec).to(memory_format=torch.channels_last)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self._step_started = time.perf_counter()
        # training (loss sum, correct, images) of epoch `totals_epoch`: saved in checkpoints, so an
        # epoch interrupted and resumed still reports its whole loss and accuracy
        self.train_totals = torch.zeros(3)
        self.totals_epoch = -1

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.stage == "head":
            return self.model.net.head(batch)
        return self.model(batch.contiguous(memory_format=torch.channels_last))

    def on_train_epoch_start(self) -> None:
        if self.stage == "fine-tune":  # small batches of few photos would move the ImageNet statistics
            from imgcls.models.backbones import batchnorm_inference_mode

            batchnorm_inference_mode(self.model.net.backbone)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_totals"] = {"epoch": self.totals_epoch, "totals": self.train_totals.tolist()}
        # augmentation and dropout draw from torch's generator: a resumed run goes on with the same draws
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("train_totals", {"epoch": -1, "totals": [0.0, 0.0, 0.0]})
        self.totals_epoch, self.train_totals = saved["epoch"], torch.tensor(saved["totals"])
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def _add_to_totals(self, loss: torch.Tensor, accuracy: torch.Tensor, size: int) -> None:
        """Kept where the loss lives: no device sync per step."""
        if self.totals_epoch != self.current_epoch:
            self.totals_epoch, self.train_totals = self.current_epoch, torch.zeros(3)
        step = torch.stack([loss.detach() * size, accuracy * size, loss.new_tensor(size)])
        self.train_totals = self.train_totals.to(loss.device) + step

    def train_epoch_metrics(self) -> dict[str, float]:
        """Loss and accuracy of this epoch so far, over every device (all ranks must call this)."""
        totals = self.train_totals if self.totals_epoch == self.current_epoch else torch.zeros(3)
        loss_sum, correct, images = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").tolist()
        return {"loss": loss_sum / images, "accuracy": correct / images} if images else {}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy on integer `labels`, or on `soft` labels (B, classes) where MixUp/CutMix mixed."""
        smoothing = self.recipe["label_smoothing"]
        if self.spec.output == "sigmoid":
            positive = labels.float() if soft is None else soft[:, 1]
            target = positive * (1 - smoothing) + 0.5 * smoothing
            per_image = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
            if self.class_weights is not None:
                weights = self.class_weights[labels] if soft is None else soft @ self.class_weights
                per_image = per_image * weights
            return per_image.mean()
        if soft is None:
            return F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=smoothing)
        per_image = F.cross_entropy(logits, soft, label_smoothing=smoothing, reduction="none")
        if self.class_weights is None:
            return per_image.mean()
        weights = soft @ self.class_weights  # as integer labels weigh: each image by its classes' shares
        return (per_image * weights).sum() / weights.sum()

    def predicted(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0] > 0).long() if self.spec.output == "sigmoid" else logits.argmax(1)

    def training_batch(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's training size (progressive resizing) and MixUp/CutMix: the pixels trained on and
        their soft labels (None when nothing mixes)."""
        if self.stage != "train":  # cached features (head) or stage 2: as they come
            return pixels, None
        size = self.sizes.training_size(self.current_epoch) if self.sizes is not None else None
        if size is not None and pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels.float(), size=(size, size), mode="bilinear", antialias=True)
        if self.mix is None:
            return pixels, None
        return self.mix(pixels.float(), labels)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> torch.Tensor:
        pixels, labels = batch
        soft = None
        if prefix == "":
            pixels, soft = self.training_batch(pixels, labels)
        outputs = self(pixels)
        # GoogLeNet in training mode: (main, aux1, aux2); each auxiliary loss counts aux_loss_weight times
        logits, *auxiliary = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = self.loss(logits, labels, soft)
        for aux_logits in auxiliary:
            loss = loss + self.recipe["aux_loss_weight"] * self.loss(aux_logits, labels, soft)
        # mixed batches: accuracy against the larger share of each image
        truth = labels if soft is None else soft.argmax(1)
        accuracy = (self.predicted(logits) == truth).float().mean()
        size = len(labels)
        if prefix == "":
            self._add_to_totals(loss, accuracy, size)
        self.log(
            f"{prefix}loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
            sync_dist=True,
        )
        self.log(
            f"{prefix}accuracy",
            accuracy,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
            sync_dist=True,
        )
        return loss

    def configure_callbacks(self) -> list[L.Callback]:
        """With `recipe.ema`: validation, checkpoints and the kept model use a moving average of the
        weights (less noise than the last step's; Lightning swaps it in). Not while finding a rate."""
        decay = self.recipe.get("ema") or 0.0
        finding = any(isinstance(c, LearningRateFinder) for c in self.trainer.callbacks)
        if self.stage != "train" or not decay or finding:
            return []
        return [WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(decay))]

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        loss = self._shared_step(batch, "")
        if self.loggers:  # experiment trackers also get the loss of every step (history.csv: per epoch)
            self.log("step_loss", loss.detach(), on_step=True, on_epoch=False)
        now = time.perf_counter()
        if batch_index > 0:
            self.log("img/s", len(batch[1]) / (now - self._step_started), prog_bar=True, on_step=True)
        self._step_started = now
        return loss

    def validation_step(self, batch, batch_index: int) -> None:
        self._shared_step(batch, "val_")

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """What the optimiser trains, at which peak rate. Stage "fine-tune" with `fine_tune_lr_decay`
        below 1: the head at `lr`, each unfrozen backbone block nearer the input at `decay` times the
        next one's rate (fastai's discriminative rates: early features change least)."""
        trained = self.model.net.head if self.stage == "head" else self.model
        params = [p for p in trained.parameters() if p.requires_grad]
        factor = self.recipe.get("fine_tune_lr_decay", 1.0)
        if self.stage != "fine-tune" or factor == 1.0:
            return [{"params": params, "lr": lr}]
        from imgcls.models.backbones import trainable_blocks

        blocks = trainable_blocks(self.model.net.backbone)
        in_blocks = {id(p) for block in blocks for p in block}
        groups = [{"params": [p for p in params if id(p) not in in_blocks], "lr": lr}]
        for depth, block in enumerate(reversed(blocks), start=1):
            groups.append({"params": block, "lr": lr * factor**depth})
        return [group for group in groups if group["params"]]

    def configure_optimizers(self) -> dict[str, Any]:
        recipe = self.recipe
        name, lr, decay = recipe["optimizer"], recipe["lr"], recipe["weight_decay"]
        if self.stage == "fine-tune":
            name, lr = recipe["fine_tune_optimizer"], recipe["fine_tune_lr"]
        params = self.parameter_groups(lr)
        # fused: one kernel for all parameters instead of a handful of passes over each (a seed-basic-cnn
        # step 1.13x faster on a CPU, benchmarks/README.md); the same update and state dict
        fused = {"fused": True}
        if name == "adam":
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=decay, **fused)
        elif name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=decay, **fused)
        elif name == "sgd":
            momentum = recipe["momentum"]  # 0: plain SGD (the seeds' SGD(momentum=0.0)), else Nesterov
            optimizer = torch.optim.SGD(
                params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=decay, **fused
            )
        elif name == "rmsprop":
            optimizer = torch.optim.RMSprop(params, lr=lr, momentum=recipe["momentum"], weight_decay=decay)
        else:
            raise ValueError(f"unknown optimizer {name!r}: use adam, adamw, sgd or rmsprop")
        epochs = recipe["fine_tune_epochs"] if self.stage == "fine-tune" else recipe["epochs"]
        total_steps = max(1, epochs * self.hparams.steps_per_epoch)
        schedule = recipe["fine_tune_schedule"] if self.stage == "fine-tune" else recipe["schedule"]
        if schedule == "onecycle":
            peaks, warmup = [group["lr"] for group in optimizer.param_groups], recipe["warmup_fraction"]
            # OneCycleLR divides by its warm-up steps: a run of a few steps gets a schedule it does not finish
            total_steps = max(total_steps, int(1 / warmup) + 1) if warmup > 0 else total_steps
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=peaks, total_steps=total_steps, pct_start=warmup
            )
        elif schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        elif schedule == "constant":
            return {"optimizer": optimizer}
        else:
            raise ValueError(f"unknown schedule {schedule!r}: use constant, onecycle or cosine")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
