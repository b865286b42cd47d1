"""Two-stage transfer learning, like the seeds and fastai, but fast on a CPU.

1. Feature extraction: the pretrained backbone is frozen; its features are computed once per
   image and view (ONNX Runtime, disk cache) and the head trains on them in seconds.
2. Fine-tuning (`recipe.fine_tune`): unfreeze the last blocks (or everything after a named
   layer), keep batch-norm statistics of the frozen part, train on images at a low rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import lightning as L
import torch

from imgcls.data.cache import DecodeSettings
from imgcls.data.discover import Dataset
from imgcls.data.loaders import make_loader
from imgcls.evaluation import predict_probabilities
from imgcls.features import FeatureExtractor, FeatureSet
from imgcls.models.backbones import load_pretrained, set_trainable
from imgcls.models.classifier import probabilities
from imgcls.recipes import Recipe
from imgcls.training.callbacks import BestWeightsInMemory, is_better
from imgcls.training.fit import (
    TrainOptions,
    class_weights,
    decode_splits,
    finish_run,
    image_loaders,
    load_best,
    make_trainer,
    model_spec,
    report_readable,
    run_trainer,
)
from imgcls.training.module import ClassifierModule

log = logging.getLogger("imgcls")


def fit_transfer(run: Path, dataset: Dataset, recipe: Recipe, options: TrainOptions) -> Path:
    L.seed_everything(options.seed, workers=True, verbose=False)
    spec = model_spec(recipe, dataset.classes)
    n_train = len(dataset.splits["train"]) * recipe.views
    module = ClassifierModule(
        spec=dataclasses.asdict(spec),
        recipe=recipe.as_dict(),
        steps_per_epoch=math.ceil(n_train / recipe.batch_size),
        stage="head",
    )
    backbone = module.model.net.backbone
    source = load_pretrained(recipe.model_args["backbone"], backbone, recipe.weights)
    log.info("backbone %s: weights from %s", recipe.model_args["backbone"], source)

    features = extract_splits(backbone, dataset, recipe)
    report_readable(dataset, {name: (f.labels, f.skipped) for name, f in features.items()}, run)
    if options.class_weights:
        module.class_weights = torch.tensor(class_weights(features["train"].labels, len(dataset.classes)))
    train, val = features["train"], features["val"]
    train_loader = make_loader(
        train.features.flatten(0, 1),
        train.labels.repeat_interleave(train.features.shape[1]),
        recipe.batch_size,
        shuffle=True,
        seed=options.seed,
    )
    val_loader = make_loader(val.features[:, 0], val.labels, 512, shuffle=False)
    head_trainer = make_trainer(run, recipe, _single_process(options), "head", recipe.epochs, checkpoint_files=False)
    run_trainer(head_trainer, module, train_loader, val_loader, run, None)  # ends with the best head restored
    head_trainer.save_checkpoint(run / "checkpoints" / "head-best.ckpt", weights_only=True)

    split = "test" if "test" in features else "val"
    if recipe.fine_tune:
        head_best = next(c for c in head_trainer.callbacks if isinstance(c, BestWeightsInMemory)).best_score
        probs, labels, kept_size = fine_tune(run, module, dataset, recipe, options, split, head_best)
        spec.image_size = kept_size
    else:
        with torch.inference_mode():
            logits = module.model.net.head.eval()(features[split].features[:, 0])
        probs, labels = probabilities(logits, spec.output).numpy(), features[split].labels.numpy()
    finish_run(run, module.model, spec, probs, labels, split)
    return run


def extract_splits(backbone: torch.nn.Module, dataset: Dataset, recipe: Recipe) -> dict[str, FeatureSet]:
    """Backbone features of every split: `recipe.views` views of training images, the plain view elsewhere."""
    decode = DecodeSettings((recipe.image_size, recipe.image_size), 3, recipe.resize)
    extractor = FeatureExtractor(backbone, decode, recipe.mean, recipe.std, recipe.augment)
    return {
        name: extractor.extract(
            [s.path for s in samples], [s.label for s in samples], recipe.views if name == "train" else 1
        )
        for name, samples in dataset.splits.items()
    }


def fine_tune(
    run: Path,
    module: ClassifierModule,
    dataset: Dataset,
    recipe: Recipe,
    options: TrainOptions,
    split: str,
    head_best: float | None,
):
    """Stage 2 on images, at `fine_tune_image_size` when set (fastai's progressive resizing: the head
    learnt cheaply on small cached features, the backbone adapts at full size). Returns probabilities
    and labels of the evaluation split and the input size of the model kept."""
    fine_recipe = recipe.override(batch_size=recipe.fine_tune_batch_size, image_size=recipe.fine_tune_image_size)
    decoded = decode_splits(dataset, fine_recipe, run)
    backbone = module.model.net.backbone
    unfrozen = set_trainable(backbone, recipe.unfreeze)
    log.info("fine-tuning backbone blocks: %s", ", ".join(unfrozen) or "none")
    if hasattr(backbone, "drop_rate"):
        backbone.drop_rate = 0.0  # timm's pre-logits dropout: the head was trained without it
    head_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    # The feature extractor left the backbone in eval mode and Lightning keeps module modes as they are;
    # batch norms are put back into eval mode at every epoch start (ClassifierModule.on_train_epoch_start).
    module.model.train()
    module.stage = "fine-tune"
    train_loader, val_loader = image_loaders(decoded, fine_recipe, options.seed)
    module.hparams.steps_per_epoch = len(train_loader)
    trainer = make_trainer(run, recipe, options, "fine-tune", recipe.fine_tune_epochs)
    run_trainer(trainer, module, train_loader, val_loader, run, None)
    best = trainer.checkpoint_callback.best_model_score
    kept_size = fine_recipe.image_size
    if best is not None and is_better(float(best), head_best, recipe.monitor):
        load_best(module, run / "checkpoints" / "fine-tune-best.ckpt")
    else:  # the best checkpoint across both stages is kept
        log.warning("fine-tuning did not beat the head's %s %s: keeping the head-only model", recipe.monitor, head_best)
        module.load_state_dict(head_state)
        if kept_size != recipe.image_size:
            decoded, kept_size = decode_splits(dataset, recipe, None), recipe.image_size
    probs = predict_probabilities(module.model.cpu(), module.spec.output, decoded[split].images)
    return probs, decoded[split].labels.numpy(), kept_size


def _single_process(options: TrainOptions) -> TrainOptions:
    """The head on cached features trains in seconds: more processes would only add start-up."""
    return dataclasses.replace(options, devices=1, strategy="auto", num_nodes=1)
