"""The classic networks of seed 001 (AlexNet, VGG, GoogLeNet, ResNet-18) and seed 003 (Fashion-MNIST CNN):
parameter counts equal the seeds' Keras models (computed here from the layer shapes), every network and
every -fast variant trains on 1- and 3-channel input, GoogLeNet's auxiliary outputs exist only in
training, add 0.3 x their loss, and never reach an ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgcls.errors import ImgclsError
from imgcls.models.classifier import ModelSpec, build_classifier, save_model
from imgcls.models.keras import keras_param_count
from imgcls.models.registry import create_model, get_model_entry
from imgcls.recipes import get_recipe, list_recipes, model_spec
from imgcls.summary import build_for_summary
from imgcls.training.module import ClassifierModule

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")

CLASSIC = ("alexnet", "vgg", "googlenet", "resnet18", "fashion-cnn")
FAST = [r.name for r in list_recipes() if r.name.endswith("-fast")]
CLASSES = [f"c{k}" for k in range(10)]


# --------------------------------------------------------------------------- Keras counts by hand


def conv(k: int, cin: int, cout: int) -> int:
    """Keras Conv2D(cout, k) with bias: k*k*cin*cout weights + cout biases."""
    return k * k * cin * cout + cout


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def batch_norm(channels: int) -> tuple[int, int]:
    """Keras BatchNormalization: (trainable gamma + beta, non-trainable moving mean + variance)."""
    return 2 * channels, 2 * channels


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(name: str, channels: int, **kwargs) -> torch.nn.Module:
    """The network at the seed's full size with shapes but no storage: counts and shapes in milliseconds."""
    with torch.device("meta"):
        return create_model(name, 10, channels, **kwargs)


def test_alexnet_parameters_match_the_seed_at_227x227x1() -> None:
    # 227 -> 55 (11x11/4) -> 27 (pool 3/2) -> 27 (5x5 same) -> 13 (pool) -> 13 (3x3 same x3) -> 6 (pool)
    keras = (
        conv(11, 1, 96)
        + conv(5, 96, 256)
        + conv(3, 256, 384)
        + conv(3, 384, 384)
        + conv(3, 384, 256)
        + dense(6 * 6 * 256, 4096)
        + dense(4096, 4096)
        + dense(4096, 10)
    )
    net = on_meta("alexnet", 1, image_size=227)
    assert count(net) == keras == 58_299_082
    assert net.eval()(torch.zeros(1, 1, 227, 227, device="meta")).shape == (1, 10)


def test_vgg11_parameters_match_the_seed_at_224x224x1() -> None:
    arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    keras, channels = 0, 1
    for num_convs, filters in arch:
        for _ in range(num_convs):
            keras += conv(3, channels, filters)
            channels = filters
    keras += dense(512 * 7 * 7, 4096) + dense(4096, 4096) + dense(4096, 10)  # 224 / 2**5 = 7
    net = on_meta("vgg", 1, image_size=224, conv_arch=arch)
    assert count(net) == keras
    assert net.eval()(torch.zeros(1, 1, 224, 224, device="meta")).shape == (1, 10)


def inception(cin: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> tuple[int, int]:
    params = conv(1, cin, c1) + conv(1, cin, c2[0]) + conv(3, *c2) + conv(1, cin, c3[0]) + conv(5, *c3)
    params += conv(1, cin, c4)
    return params, c1 + c2[1] + c3[1] + c4


def test_googlenet_parameters_match_the_seed_at_224x224x3_with_both_auxiliary_classifiers() -> None:
    keras = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)
    channels = 192
    plan = [
        (64, (96, 128), (16, 32), 32),  # b3
        (128, (128, 192), (32, 96), 64),
        (192, (96, 208), (16, 48), 64),  # b4 (aux 1 after this one)
        (160, (112, 224), (24, 64), 64),
        (128, (128, 256), (24, 64), 64),
        (112, (144, 288), (32, 64), 64),  # (aux 2 after this one)
        (256, (160, 320), (32, 128), 128),
        (256, (160, 320), (32, 128), 128),  # b5
        (384, (192, 384), (48, 128), 128),
    ]
    aux = 0
    for index, block in enumerate(plan):
        params, channels = inception(channels, *block)
        keras += params
        if index in (2, 5):  # 224 -> 112 -> 56 -> 28 -> 14 in b4; average-pool 5/3 same -> 5x5
            aux += conv(1, channels, 128) + dense(128 * 5 * 5, 1024) + dense(1024, 10)
    keras += dense(channels, 10)  # after global average pooling: 1024 channels

    net = on_meta("googlenet", 3, image_size=224)
    assert channels == 1024
    assert count(net) == keras + aux
    assert count(net) - count(net.aux1) - count(net.aux2) == keras


def test_resnet18_parameters_match_the_seed_at_224x224x1() -> None:
    trainable, moving = conv(7, 1, 64), 0
    gamma_beta, stats = batch_norm(64)
    trainable, moving = trainable + gamma_beta, moving + stats
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for i in range(2):
            projected = i == 0 and stage > 0
            trainable += conv(3, channels, width) + conv(3, width, width)
            trainable += conv(1, channels, width) if projected else 0
            for _ in range(2):
                gamma_beta, stats = batch_norm(width)
                trainable, moving = trainable + gamma_beta, moving + stats
            channels = width
    trainable += dense(512, 10)

    net = on_meta("resnet18", 1)
    assert count(net) == trainable  # Keras "Trainable params"
    assert keras_param_count(net) == trainable + moving  # Keras "Total params"
    assert net.eval()(torch.zeros(1, 1, 224, 224, device="meta")).shape == (1, 10)


def test_fashion_cnn_parameters_match_seed_003() -> None:
    # 28 -> 26 (3x3 valid) -> 13 (pool) -> 11 -> 5
    keras = conv(3, 1, 64) + conv(3, 64, 64) + dense(5 * 5 * 64, 128) + dense(128, 10)
    assert count(create_model("fashion-cnn", 10, 1, image_size=28)) == keras == 243_786


def test_summary_of_the_fashion_recipe_prints_the_keras_count() -> None:
    from imgcls.summary import model_summary

    net, shape = build_for_summary("seed-fashion-cnn", num_classes=10)
    assert count(net) == 243_786
    assert shape == (1, 1, 28, 28)  # grayscale 28x28 clothes
    assert "Total params: 243,786" in model_summary("seed-fashion-cnn", num_classes=10)


# --------------------------------------------------------------------------- training and inference shapes


def fast_spec(recipe: str, channels: int, size: int | None = None) -> ModelSpec:
    chosen = get_recipe(recipe).override(channels=channels, image_size=size)
    spec = model_spec(chosen, CLASSES)
    spec.mean, spec.std = (0.5,) * channels, (0.25,) * channels
    return spec


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("recipe", FAST)
def test_fast_variants_train_on_1_and_3_channels(recipe: str, channels: int) -> None:
    torch.manual_seed(0)
    size = 28 if channels == 1 else 32  # MNIST-sized digits, CIFAR-sized photos
    model = build_classifier(fast_spec(recipe, channels, size)).train()
    pixels = torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8)
    labels = torch.tensor([0, 3, 9, 3])

    outputs = model(pixels)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert all(o.shape == (4, 10) and torch.isfinite(o).all() for o in outputs)
    sum(F.cross_entropy(o, labels) for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{recipe}: no usable gradient for {missing}"

    with torch.no_grad():
        assert model.eval()(pixels).shape == (4, 10)


@pytest.mark.parametrize("name", CLASSIC)
def test_seed_networks_run_at_their_smallest_size(name: str) -> None:
    entry = get_model_entry(name)
    size = entry.min_size
    kwargs = {"image_size": size} if name != "resnet18" else {}
    net = create_model(name, 10, 3, **kwargs).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 10)
    if name != "resnet18" and name != "googlenet":
        with pytest.raises(ImgclsError, match=f"{name}: {size - 1}x{size - 1} inputs are too small"):
            create_model(name, 10, 3, image_size=size - 1)


def test_googlenet_returns_auxiliary_outputs_only_in_training() -> None:
    torch.manual_seed(0)
    net = create_model("googlenet", 10, 3, image_size=32, stem_stride=1, width=0.25)
    images = torch.randn(2, 3, 32, 32)
    main, aux1, aux2 = net.train()(images)
    assert main.shape == aux1.shape == aux2.shape == (2, 10)
    assert not torch.equal(aux1, main) and not torch.equal(aux1, aux2)  # three different heads
    with torch.no_grad():
        evaluated = net.eval()(images)
    assert isinstance(evaluated, torch.Tensor)
    torch.testing.assert_close(evaluated, main.detach())  # no dropout or batch norm: same main output


def module_for(recipe: str, **changes) -> ClassifierModule:
    chosen = get_recipe(recipe).override(**changes)
    spec = model_spec(chosen, CLASSES)
    return ClassifierModule(spec=spec.__dict__, recipe=chosen.as_dict(), steps_per_epoch=1)


@pytest.mark.parametrize("weight", [0.3, 0.0, 1.0])
def test_training_loss_adds_the_weighted_auxiliary_losses(weight: float) -> None:
    torch.manual_seed(0)
    module = module_for("seed-googlenet-fast", aux_loss_weight=weight, label_smoothing=0.0).train()
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([1, 5, 7])
    main, aux1, aux2 = module(pixels)
    expected = F.cross_entropy(main, labels) + weight * (F.cross_entropy(aux1, labels) + F.cross_entropy(aux2, labels))

    loss = module.training_step((pixels, labels), 0)
    torch.testing.assert_close(loss, expected)
    module.eval()
    with torch.no_grad():
        assert isinstance(module(pixels), torch.Tensor)


def test_the_seed_recipes_keep_the_seed_settings() -> None:
    alexnet = get_recipe("seed-alexnet-mnist")
    assert (alexnet.image_size, alexnet.channels, alexnet.optimizer, alexnet.lr, alexnet.momentum) == (
        227,
        1,
        "sgd",
        0.01,
        0.0,
    )
    assert (alexnet.batch_size, alexnet.epochs) == (128, 3)
    fashion = get_recipe("seed-fashion-cnn")
    assert (fashion.image_size, fashion.channels, fashion.optimizer, fashion.epochs) == (28, 1, "adam", 2)
    assert get_recipe("seed-googlenet").aux_loss_weight == 0.3
    for name in ("seed-alexnet-mnist", "seed-vgg11", "seed-googlenet", "seed-resnet18", "seed-fashion-cnn"):
        assert f"{name.removesuffix('-mnist')}-fast" in FAST  # every seed example has a fast variant
    module = module_for("seed-alexnet-mnist")  # plain SGD (momentum 0) must build an optimiser
    assert isinstance(module.configure_optimizers()["optimizer"], torch.optim.SGD)


# --------------------------------------------------------------------------- export


def test_googlenet_onnx_export_has_only_the_main_output(tmp_path) -> None:
    import onnxruntime as ort

    from imgcls.export import export_onnx

    torch.manual_seed(0)
    spec = fast_spec("seed-googlenet-fast", 3)
    spec.arch_args["width"] = 0.25  # a narrow copy keeps the export fast
    model = build_classifier(spec).train()  # export must switch to eval mode by itself
    save_model(tmp_path / "run", model.eval(), spec)
    model.train()

    path = export_onnx(tmp_path / "run")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32)).astype(np.float32)
    (probabilities,) = session.run(None, {"pixels": pixels})
    assert probabilities.shape == (3, 10)
    with torch.no_grad():
        expected = torch.softmax(model.eval()(torch.from_numpy(pixels)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)


def test_summary_shows_googlenets_auxiliary_classifiers() -> None:
    from imgcls.summary import model_summary

    table = model_summary("googlenet", num_classes=10, image_size=64)
    assert "AuxClassifier (aux1)" in table and "AuxClassifier (aux2)" in table
    net, _ = build_for_summary("googlenet", num_classes=10, image_size=64)
    assert f"Total params: {count(net):,}" in table


def test_recipe_override_takes_augmentation_as_json() -> None:
    """`bench_train.py --set 'augment={...}'` and config files give plain dicts."""
    changed = get_recipe("cifar10-fast").override(augment={"horizontal_flip": True, "random_erasing": 0.5})
    assert changed.augment.horizontal_flip and changed.augment.random_erasing == 0.5
    assert changed.augment.width_shift_range == 0  # a full replacement, not a merge
    assert changed.as_dict()["augment"]["random_erasing"] == 0.5
