"""`imgcls export --format hf`: a folder plain timm loads and predicts like imgcls, a model card filled
from the run, imgcls's own layout for other architectures, nothing unrelated overwritten, and `--push`
against a local server that answers as the Hugging Face Hub does (and a closed port for offline)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import imgcls
from imgcls.cli import app
from imgcls.errors import ImgclsError
from imgcls.export import export_model
from imgcls.export.hf import data_config, export_hf, folder_layout
from imgcls.models.classifier import ModelSpec, build_classifier, probabilities, save_model

pytestmark = pytest.mark.usefixtures("isolated_cache")
runner = CliRunner()
SIZE = 64


def random_model_folder(
    folder: Path, backbone: str, classes: list[str], output: str = "softmax", channels: int = 3
) -> Path:
    """model.json + model.safetensors of a random transfer model (no training needed for layout checks)."""
    spec = ModelSpec(
        architecture="transfer",
        classes=classes,
        image_size=SIZE,
        channels=channels,
        arch_args={"backbone": backbone, "image_size": SIZE},
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        resize="crop",
        output=output,
    )
    torch.manual_seed(0)
    model = build_classifier(spec).eval()
    with torch.no_grad():
        model.net.head[-1].weight.mul_(30)  # varied, confident probabilities
    save_model(folder, model, spec)
    return folder


def timm_probabilities(folder: Path, pixels: torch.Tensor) -> torch.Tensor:
    """What plain timm predicts from the folder, fed the same resized pixels imgcls sees."""
    import timm

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((pixels / 255 - mean) / std).softmax(dim=1)


def imgcls_probabilities(folder: Path, pixels: torch.Tensor) -> torch.Tensor:
    model, spec = imgcls.Run.open(folder).load_model()
    with torch.no_grad():
        return probabilities(model(pixels), spec.output)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "timm/resnet18"])
def test_timm_layout_gives_imgcls_probabilities(tmp_path: Path, backbone: str) -> None:
    source = random_model_folder(tmp_path / "run", backbone, ["ant", "bee", "cow"])
    folder = export_hf(source, tmp_path / "hf")
    assert folder_layout(folder) == "timm"
    pixels = torch.randint(0, 256, (4, 3, SIZE, SIZE)).float()
    expected = imgcls_probabilities(source, pixels)
    assert torch.allclose(timm_probabilities(folder, pixels), expected, atol=1e-5)
    assert torch.allclose(imgcls_probabilities(folder, pixels), expected, atol=1e-6)  # imgcls reads it back
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == ["ant", "bee", "cow"] and config["num_classes"] == 3
    assert config["pretrained_cfg"]["crop_mode"] == "center" and config["pretrained_cfg"]["crop_pct"] == 1.0


def test_sigmoid_model_becomes_two_timm_logits(tmp_path: Path) -> None:
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["cat", "dog"], output="sigmoid")
    folder = export_hf(source, tmp_path / "hf")
    pixels = torch.randint(0, 256, (3, 3, SIZE, SIZE)).float()
    expected = imgcls_probabilities(source, pixels)
    assert torch.allclose(timm_probabilities(folder, pixels), expected, atol=1e-5)
    assert torch.allclose(imgcls_probabilities(folder, pixels), expected, atol=1e-6)


@pytest.mark.slow
def test_trained_run_loads_in_plain_timm_and_agrees_on_held_out_photos(
    tiny_runs, cats_vs_dogs_dir: Path, tmp_path: Path
) -> None:
    """The issue's check: timm's own resolve_data_config + create_transform on photos the run never saw."""
    import timm
    from PIL import Image

    folder = export_hf(tiny_runs.transfer, tmp_path / "hf")
    photos = [p for name in ("cat", "dog") for p in sorted((cats_vs_dogs_dir / "val" / name).glob("*.jpg"))[100:130]]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    names = model.pretrained_cfg["label_names"]
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])
        timm_labels = [names[i] for i in model(batch).argmax(dim=1).tolist()]
    imgcls_labels = [p.label for p in imgcls.load(tiny_runs.transfer).predict(photos)]
    agreement = np.mean([a == b for a, b in zip(timm_labels, imgcls_labels, strict=True)])
    assert agreement >= 0.95, f"timm and imgcls agree on {agreement:.0%} of {len(photos)} photos"
    assert [p.label for p in imgcls.load(folder).predict(photos)] == imgcls_labels


@pytest.mark.slow
def test_model_card_is_filled_from_the_run(tiny_runs, tmp_path: Path) -> None:
    folder = export_hf(tiny_runs.transfer, tmp_path / "hf", license="mit")
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "timm" and front["pipeline_tag"] == "image-classification"
    assert front["license"] == "mit"
    metrics = imgcls.Run.open(tiny_runs.transfer).metrics
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == round(metrics["accuracy"], 4)
    for expected in ("## Training data", "| cat | 8 | 4 |", "## Evaluation", "Confusion matrix", "## Data check"):
        assert expected in card
    assert "read all 24 photos" in card  # data check ran on the run's own files
    assert "ms** for one photo" in card and "photos/s" in card  # measured latency
    assert "imgcls train" in card and "recipe:" in card
    assert (folder / "curves.png").is_file() and "![curves](curves.png)" in card


def test_other_architectures_keep_imgcls_layout(tiny_runs, tmp_path: Path) -> None:
    folder = export_hf(tiny_runs.seed_cnn, tmp_path / "hf")
    assert folder_layout(folder) == "imgcls"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "imgcls/seed-basic-cnn"
    card = (folder / "README.md").read_text()
    assert "library_name: imgcls" in card and "load it with imgcls" in card
    pixels = torch.randint(0, 256, (2, 3, SIZE, SIZE)).float()
    assert torch.equal(imgcls_probabilities(folder, pixels), imgcls_probabilities(tiny_runs.seed_cnn.path, pixels))


def test_letterboxed_model_is_timm_border_mode_with_the_same_pixels(tmp_path: Path) -> None:
    """`pad` is timm's crop_mode "border" (which fills with the mean colour: grey for mean 0.5)."""
    import timm
    from PIL import Image

    from imgcls.data.decode import load_image

    folder = tmp_path / "run"
    random_model_folder(folder, "efficientnet_lite0", ["a", "b", "c"])
    spec = json.loads((folder / "model.json").read_text()) | {"resize": "pad", "mean": [0.5] * 3, "std": [0.5] * 3}
    (folder / "model.json").write_text(json.dumps(spec))
    exported = export_hf(folder, tmp_path / "hf")
    assert folder_layout(exported) == "timm"
    model = timm.create_model(f"local-dir:{exported}", pretrained=True)
    config = timm.data.resolve_data_config({}, model=model)
    assert config["crop_mode"] == "border"
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 90, 3), dtype=np.uint8))
    theirs = timm.data.create_transform(**config)(photo).numpy() * 0.5 + 0.5
    ours = load_image(photo, (SIZE, SIZE), 3, "pad").transpose(2, 0, 1) / 255
    assert np.abs(theirs - ours).max() < 1e-5


def test_data_config_follows_the_resize_policy() -> None:
    spec = ModelSpec("transfer", ["a", "b"], 96, resize="squash", mean=(0.5,), std=(0.25,), channels=1)
    config = data_config(spec)
    assert config["crop_mode"] == "squash" and config["input_size"] == (3, 96, 96)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.25, 0.25, 0.25)


def test_refuses_to_replace_an_unrelated_folder_and_replaces_its_own(tmp_path: Path) -> None:
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b", "c"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ImgclsError, match="not an earlier export of this run"):
        export_hf(source, mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    folder = export_model(source, "hf", tmp_path / "hf")
    imgcls.load(folder).predict([np.zeros((20, 20, 3), np.uint8)])  # the auto engine adds model.onnx there
    assert (folder / "model.onnx").is_file()
    export_model(source, "hf", folder)  # the same run again: replaced whole, ONNX files included
    assert not (folder / "model.onnx").exists() and (folder / "model.safetensors").is_file()
    (folder / ".git").mkdir()  # a clone of the Hub repository, say: the user's, never deleted
    with pytest.raises(ImgclsError, match=r"also holds \.git; move those out first"):
        export_model(source, "hf", folder)
    assert (folder / ".git").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_grayscale_models_keep_imgcls_layout(tmp_path: Path) -> None:
    """imgcls normalises the one channel before copying it to three, which timm's config cannot say."""
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b"], channels=1)
    folder = export_hf(source, tmp_path / "hf")
    assert folder_layout(folder) == "imgcls"
    pixels = torch.randint(0, 256, (2, 1, SIZE, SIZE)).float()
    assert torch.equal(imgcls_probabilities(folder, pixels), imgcls_probabilities(source, pixels))


def test_a_bad_repository_id_is_refused_before_exporting(tmp_path: Path) -> None:
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b", "c"])
    result = runner.invoke(
        app, ["export", str(source), "--format", "hf", "--out", str(tmp_path / "hf"), "--push", "a b/c"]
    )
    assert isinstance(result.exception, ImgclsError) and "not a Hub repository id" in str(result.exception)
    assert not (tmp_path / "hf").exists()


# --------------------------------------------------------------------------- --push


class FakeHub(http.server.BaseHTTPRequestHandler):
    """The Hub's endpoints that `HfApi.create_repo` + `upload_folder` call, keeping what was committed."""

    protocol_version = "HTTP/1.1"
    refuse_token = False
    received: dict[str, bytes] = {}
    tokens: dict[str, str] = {}  # path -> Authorization header

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.tokens[self.path] = self.headers.get("authorization", "")
        if self.refuse_token:
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        if self.path == "/api/repos/create":
            return self._send(200, {"url": f"http://{self.headers['host']}/user/cats", "name": "user/cats"})
        if self.path == "/api/validate-yaml":
            yaml.safe_load(json.loads(body)["content"].split("---\n")[1])  # the card's front matter parses
            return self._send(200, {"errors": [], "warnings": []})
        if self.path.endswith("/preupload/main"):
            files = json.loads(body)["files"]
            return self._send(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if self.path.endswith("/commit/main"):
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.received[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            url = f"http://{self.headers['host']}/user/cats/commit/{'a' * 40}"
            return self._send(200, {"commitUrl": url, "commitOid": "a" * 40})
        self._send(404, {"error": "not here"})

    do_GET = do_POST

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch):
    FakeHub.received, FakeHub.tokens, FakeHub.refuse_token = {}, {}, False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    yield FakeHub
    server.shutdown()


def test_push_uploads_every_file_of_the_folder(tmp_path: Path, fake_hub) -> None:
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b", "c"])
    result = runner.invoke(
        app, ["export", str(source), "--format", "hf", "--out", str(tmp_path / "hf"), "--push", "user/cats"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "hf"
    assert fake_hub.received == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert fake_hub.tokens["/api/repos/create"] == "Bearer hf_test_token"
    assert fake_hub.tokens["/api/models/user/cats/commit/main"] == "Bearer hf_test_token"
    assert "pushed to" in result.output


def test_push_with_a_refused_token_says_what_to_do(tmp_path: Path, fake_hub) -> None:
    fake_hub.refuse_token = True
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b", "c"])
    result = runner.invoke(
        app, ["export", str(source), "--format", "hf", "--out", str(tmp_path / "hf"), "--push", "user/cats"]
    )
    assert isinstance(result.exception, ImgclsError)  # `imgcls` prints it in one line, exit code 2
    assert "refused the token (HTTP 401)" in str(result.exception)
    assert (tmp_path / "hf" / "model.safetensors").is_file()  # the folder is kept for a later upload


def test_push_offline_keeps_the_folder_and_says_how_to_upload_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b", "c"])
    result = runner.invoke(
        app, ["export", str(source), "--format", "hf", "--out", str(tmp_path / "hf"), "--push", "user/cats"]
    )
    assert isinstance(result.exception, ImgclsError)
    assert "cannot reach http://127.0.0.1:9" in str(result.exception)
    assert "hf upload user/cats" in str(result.exception)
    assert (tmp_path / "hf" / "README.md").is_file()


def test_push_needs_the_hf_format(tmp_path: Path) -> None:
    source = random_model_folder(tmp_path / "run", "efficientnet_lite0", ["a", "b", "c"])
    result = runner.invoke(app, ["export", str(source), "--push", "user/cats"])
    assert isinstance(result.exception, ImgclsError) and "--format hf" in str(result.exception)
