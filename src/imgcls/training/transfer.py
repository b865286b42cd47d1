"""The transfer strategy, like the seeds and fastai but fast on a CPU, in two stages:

1. "head": the pretrained backbone is frozen; its features are computed once per image and view
   (ONNX Runtime, disk cache) and the head trains on them in seconds. Saved as `head-best.ckpt`
   with its score, so `--resume` never recomputes it.
2. "fine-tune" (`recipe.fine_tune`): unfreeze the last blocks (or everything after a named layer),
   keep batch-norm statistics, train on images at a low rate, at `fine_tune_image_size` when set
   (progressive resizing). Checkpoints every epoch; `--resume` continues it. The better of the two
   stages on `recipe.monitor` is kept, and the run says which.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import lightning as L
import torch

from imgcls.data.loaders import make_loader
from imgcls.errors import ImgclsError
from imgcls.features import FeatureSet, head_logits, recipe_extractor
from imgcls.models.backbones import load_pretrained, set_trainable
from imgcls.models.classifier import predict_probabilities, probabilities
from imgcls.models.transfer import feature_shape
from imgcls.progress import is_rank_zero
from imgcls.recipes import model_spec
from imgcls.run import write_history
from imgcls.training.callbacks import BestWeightsInMemory, is_better
from imgcls.training.logistic import fit_logistic_cv
from imgcls.training.lr_find import choose_lr
from imgcls.training.module import ClassifierModule
from imgcls.training.steps import (
    Job,
    decode_splits,
    finish_run,
    image_loaders,
    job_class_weights,
    load_best,
    load_stage,
    make_trainer,
    report_readable,
    resume_point,
    run_trainer,
    save_stage,
)

log = logging.getLogger("imgcls")


def fit_transfer(job: Job, resume: bool) -> None:
    run, recipe, options = job.run, job.recipe, job.options
    L.seed_everything(options.seed, workers=True, verbose=False)
    spec = model_spec(recipe, job.dataset.classes)
    n_train = len(job.dataset.splits["train"]) * recipe.views
    module = ClassifierModule(
        spec=dataclasses.asdict(spec),
        recipe=recipe.as_dict(),
        steps_per_epoch=math.ceil(n_train / recipe.batch_size),
        stage="head",
    )
    _check_fine_tune_size(recipe, module)
    head_file = run.checkpoint("head", "best")
    features = None
    together = _started_together()
    if together and not is_rank_zero():
        _wait_for_rank_zero()  # rank 0 trains stage 1 alone (features are seconds' work), then saves it
        if not recipe.fine_tune:
            return  # nothing left to share: rank 0 finishes the run
    # Lightning's DDP workers start when stage 2 starts, after rank 0 saved stage 1: they take it as it is
    restored = load_stage(head_file, module) if resume or not is_rank_zero() else None
    if restored is not None:
        head_score, head_epoch = restored
        log.info("stage 1 (head) is done: restored from the run's %s", head_file.name)
    else:
        features = _extract(job, module)
        module.class_weights = _weights(job, features["train"].labels)
        head_score, head_epoch = _train_head(job, module, features)
        save_stage(head_file, module, head_score, head_epoch)
    if together and is_rank_zero():
        _wait_for_rank_zero()  # the other workers may now read stage 1
    if recipe.fine_tune:
        _fine_tune(job, module, head_score, head_epoch, resume_point(job, "fine-tune") if resume else None)
        return
    split = features[job.eval_split] if features else _extract(job, module, splits=(job.eval_split,))[job.eval_split]
    with torch.inference_mode():
        logits = head_logits(module.model.net.head.eval(), split)
    probs = probabilities(logits, spec.output).numpy()
    finish_run(job, module.model, spec, probs, split, {"stage": "head", "epoch": head_epoch})


def _check_fine_tune_size(recipe, module: ClassifierModule) -> None:
    """Progressive resizing needs a head on pooled features: said before anything is trained."""
    size = recipe.fine_tune_image_size
    if not recipe.fine_tune or size in (None, recipe.image_size):
        return
    if len(feature_shape(module.model.net.backbone, recipe.image_size)) != 1:
        raise ImgclsError(
            f"fine_tune_image_size {size} needs a pooled backbone: this head reads a feature map of "
            f"{recipe.image_size} px; leave fine_tune_image_size out"
        )


def _weights(job: Job, labels: torch.Tensor) -> torch.Tensor | None:
    weights = job_class_weights(job, labels)
    return None if weights is None else torch.tensor(weights, dtype=torch.float32)


def _extract(job: Job, module: ClassifierModule, splits: tuple[str, ...] | None = None) -> dict[str, FeatureSet]:
    """Backbone features of every split (or `splits`): `recipe.views` views of training images, the
    plain view elsewhere. Loads the pretrained weights first unless the module holds trained ones."""
    recipe, backbone = job.recipe, module.model.net.backbone
    name = recipe.model_args["backbone"]
    if splits is None:
        source = load_pretrained(name, backbone, recipe.weights)
        log.info("backbone %s: weights from %s", name, source)
    extractor = recipe_extractor(backbone, recipe)  # the same cache entries evaluation and suspects read
    found = {}
    for split, samples in job.dataset.splits.items():
        if splits is not None and split not in splits:
            continue
        views = recipe.views if split == "train" else 1
        title = f"stage 1: features of {len(samples):,} {split} photos, {name} at {recipe.image_size} px"
        if views > 1:
            title += f", {views} views"
        log.info("%s", title)
        progress = f"{split} features" if job.options.progress else None  # shown only when some are missing
        found[split] = extractor.extract([s.path for s in samples], [s.label for s in samples], views, progress)
        if recipe.flip_tta and split != "train":  # scored as the flip-TTA model predicts: photo and mirror
            found[split] = extractor.with_mirrors(found[split], progress and f"{split} mirror features")
    if splits is None:
        report_readable(job, {name: (f.labels, f.skipped) for name, f in found.items()}, is_rank_zero())
    return found


def _train_head(job: Job, module: ClassifierModule, features: dict[str, FeatureSet]) -> tuple[float | None, int | None]:
    """Stage 1 on cached features, in one process (seconds: more processes would only add start-up);
    ends with the best head restored. Returns its score on `recipe.monitor` and its epoch."""
    recipe, options = job.recipe, job.options
    if recipe.head_fit == "lbfgs-cv":
        return _fit_logistic_head(job, module, features)
    train, val = features["train"], features["val"]
    train_loader = make_loader(
        train.features.flatten(0, 1),
        train.labels.repeat_interleave(train.features.shape[1]),
        recipe.batch_size,
        shuffle=True,
        seed=options.seed,
    )
    val_loader = make_loader(val.tta_inputs(), val.labels, 512, shuffle=False)  # exact for a linear head
    choose_lr(job, module, train_loader, "head", max_epochs=None)  # --lr find: 100 steps cost a second here
    log.info("stage 1: training the head on cached features for %d epochs", recipe.epochs)
    trainer = make_trainer(job, "head", recipe.epochs, checkpoint_files=False, single_process=True)
    run_trainer(job, trainer, module, (train_loader, val_loader), "head", None)
    best = next(c for c in trainer.callbacks if isinstance(c, BestWeightsInMemory))
    return best.best_score, best.best_epoch


def _fit_logistic_head(job: Job, module: ClassifierModule, features: dict[str, FeatureSet]) -> tuple[float, int]:
    """`head_fit="lbfgs-cv"`: the linear head as L2 logistic regression whose strength k-fold
    cross-validation on the training features chose; one history row ("epoch" 1) with its losses."""
    head = module.model.net.head  # models.transfer.make_head: [Flatten, ...] + Linear
    linear = head[-1]
    if any(isinstance(layer, torch.nn.Linear) for layer in head[:-1]):
        raise ImgclsError("head_fit lbfgs-cv fits a linear head; this recipe's head has a hidden layer: use epochs")
    train, val = features["train"], features["val"]
    started = time.perf_counter()
    outputs, seed = linear.out_features, job.options.seed
    fit = fit_logistic_cv(train.features, train.labels, outputs, class_weights=module.class_weights, seed=seed)
    fit.apply_to(linear)
    # history's `lr` column holds the L2 strength the fit chose (there is no learning rate)
    row = {"stage": "head", "epoch": 1, "lr": fit.strength, "seconds": time.perf_counter() - started}
    with torch.inference_mode():
        for prefix, split in (("", train), ("val_", val)):
            logits = head_logits(head.eval(), split)
            row[f"{prefix}loss"] = float(module.loss(logits, split.labels))
            row[f"{prefix}accuracy"] = float((module.predicted(logits) == split.labels).float().mean())
    write_history(job.run.history_path, [row])
    log.info(
        "stage 1: logistic head, L2 strength %.3g chosen by %d-fold cross-validation on the training features "
        "(out-of-fold accuracy %.2f%%), %.1f s; val accuracy %.2f%%",
        fit.strength,
        fit.folds,
        100 * fit.cv_accuracy,
        row["seconds"],
        100 * row["val_accuracy"],
    )
    return row[job.recipe.monitor], 1


def _started_together() -> bool:
    """Ray Train starts every worker at once in one process group (Lightning's DDP only at stage 2)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _wait_for_rank_zero() -> None:
    torch.distributed.barrier()


def _fine_tune(job: Job, module: ClassifierModule, head_score, head_epoch, checkpoint) -> None:
    """Stage 2 on images; keeps whichever stage scored better and saves the run's result."""
    recipe, options = job.recipe, job.options
    tuned = _stage_two(recipe)
    backbone = module.model.net.backbone
    decoded = decode_splits(job, tuned, write_skipped=is_rank_zero())
    module.class_weights = _weights(job, decoded["train"].labels)
    unfrozen = set_trainable(backbone, recipe.unfreeze)
    log.info(
        "stage 2: fine-tuning %s at %d px for %d epochs%s",
        ", ".join(unfrozen) or "nothing",
        tuned.image_size,
        recipe.fine_tune_epochs,
        " (resumed)" if checkpoint else "",
    )
    if hasattr(backbone, "drop_rate"):
        backbone.drop_rate = 0.0  # timm's pre-logits dropout: the head was trained without it
    head_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    # The feature extractor left the backbone in eval mode and Lightning keeps module modes as they are;
    # batch norms are put back into eval mode at every epoch start (ClassifierModule.on_train_epoch_start).
    module.model.train()
    module.stage = "fine-tune"
    loaders = image_loaders(decoded, tuned, options.seed)
    module.hparams.steps_per_epoch = len(loaders[0])
    choose_lr(job, module, loaders[0], "fine-tune")  # --fine-tune-lr find
    trainer = make_trainer(job, "fine-tune", recipe.fine_tune_epochs)
    run_trainer(job, trainer, module, loaders, "fine-tune", checkpoint)
    try:
        if trainer.is_global_zero:
            _keep_the_better_stage(job, module, trainer, head_state, head_score, head_epoch, decoded)
    finally:
        trainer.strategy.barrier("imgcls-finish-run")  # DDP: other ranks return once the run is complete


def _keep_the_better_stage(job: Job, module, trainer, head_state, head_score, head_epoch, decoded) -> None:
    """The stage with the better `recipe.monitor` is kept; the run says which, then is finished."""
    run, recipe = job.run, job.recipe
    tuned = _stage_two(recipe)
    best = trainer.checkpoint_callback.best_model_score
    split = job.eval_split
    if best is not None and is_better(float(best), head_score, recipe.monitor):
        epoch = load_best(module, run.checkpoint("fine-tune", "best"))
        kept, kept_recipe = {"stage": "fine-tune", "epoch": epoch}, tuned
        log.info("stage 2 kept: %s %.4f beats the head's %s", recipe.monitor, float(best), _score(head_score))
    else:
        log.warning(
            "fine-tuning did not beat the head's %s %s: keeping the head-only model", recipe.monitor, _score(head_score)
        )
        module.load_state_dict(head_state)
        kept, kept_recipe = {"stage": "head", "epoch": head_epoch}, recipe
        if tuned.image_size != recipe.image_size:
            decoded = decode_splits(job, recipe, write_skipped=False)  # the head's size
    spec = model_spec(kept_recipe, job.dataset.classes)
    probs = predict_probabilities(module.model.cpu(), spec.output, decoded[split].images)
    finish_run(job, module.model, spec, probs, decoded[split], kept)


def _stage_two(recipe):
    """The recipe as stage 2 sees it: its batch size and (progressive resizing) its image size."""
    return recipe.override(batch_size=recipe.fine_tune_batch_size, image_size=recipe.fine_tune_image_size)


def _score(value: float | None) -> str:
    return "(none)" if value is None else f"{value:.4f}"
