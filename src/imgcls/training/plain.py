"""The plain strategy: one stage ("train") that trains the whole network on decoded images."""

from __future__ import annotations

import dataclasses
import logging

import lightning as L

from imgcls.errors import ImgclsError
from imgcls.files import display_path
from imgcls.models.classifier import predict_probabilities
from imgcls.progress import is_rank_zero
from imgcls.recipes import model_spec
from imgcls.training.lr_find import choose_lr
from imgcls.training.module import ClassifierModule
from imgcls.training.steps import (
    Job,
    decode_splits,
    finish_run,
    image_loaders,
    job_class_weights,
    load_best,
    make_trainer,
    resume_point,
    run_trainer,
)

log = logging.getLogger("imgcls")
STAGE = "train"


def fit_plain(job: Job, resume: bool) -> None:
    run, recipe, options = job.run, job.recipe, job.options
    checkpoint = resume_point(job, STAGE) if resume else None
    if resume and checkpoint is None:
        missing = display_path(run.checkpoint(STAGE, "last").relative_to(run.path))
        raise ImgclsError(f"{run}: no checkpoint to resume from ({missing} is missing)")
    L.seed_everything(options.seed, workers=True, verbose=False)
    decoded = decode_splits(job, recipe, write_skipped=is_rank_zero())  # DDP: one process lists them
    spec = model_spec(recipe, job.dataset.classes)
    loaders = image_loaders(decoded, recipe, options.seed)
    module = ClassifierModule(
        spec=dataclasses.asdict(spec),
        recipe=recipe.as_dict(),
        steps_per_epoch=len(loaders[0]),
        class_weights=job_class_weights(job, decoded["train"].labels),
    )
    photos = len(decoded["train"].labels)
    size = f"{recipe.image_size} px"
    if recipe.full_size_epoch:
        grows = f"growing to {size} by epoch {recipe.full_size_epoch + 1}, validated from then"
        size = f"{recipe.progressive_from} px ({grows})"
    log.info("training %s on %s photos at %s for %d epochs", recipe.model, f"{photos:,}", size, recipe.epochs)
    choose_lr(job, module, loaders[0], STAGE)  # --lr find
    trainer = make_trainer(job, STAGE, recipe.epochs)
    run_trainer(job, trainer, module, loaders, STAGE, checkpoint)
    try:
        if trainer.is_global_zero:
            epoch = load_best(module, run.checkpoint(STAGE, "best"))
            split = job.eval_split
            probs = predict_probabilities(module.model.cpu(), spec.output, decoded[split].images)
            finish_run(job, module.model, spec, probs, decoded[split], {"stage": STAGE, "epoch": epoch})
    finally:
        trainer.strategy.barrier("imgcls-finish-run")  # DDP: other ranks return once the run is complete
