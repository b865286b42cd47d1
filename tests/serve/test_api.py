"""The JSON API through FastAPI's TestClient, on a real trained model and real photos: every route,
every kind of bad input (each answered with a 4xx JSON message, the server unharmed), explanations,
and concurrent requests that get their own answers while sharing model calls."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgcls.inference import Classifier
from imgcls.serve import create_app

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def classifier(served_run: Path) -> Classifier:
    return Classifier.load(served_run)


@pytest.fixture(scope="module")
def client(served_run: Path):
    # batches of up to 8, whatever this machine would choose: the concurrency test below checks them
    with TestClient(create_app(served_run, max_upload_mb=0.25, max_batch=8)) as test_client:
        yield test_client


def post_file(client: TestClient, data: bytes, name: str = "photo.jpg", query: str = "", field: str = "file"):
    return client.post(f"/predict{query}", files={field: (name, data, "application/octet-stream")})


def assert_refused(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word in message.lower(), message
    return message


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring `width` x `height` with a token of data: a decompression bomb's shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- routes


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_model_describes_classes_size_and_training_metrics(client, classifier, served_run):
    described = client.get("/model").json()
    assert described["classes"] == ["cat", "dog"] == classifier.classes
    assert described["image_size"] == 160
    assert described["architecture"] == classifier.spec.architecture
    assert described["engine"] == "onnx"
    assert described["explain"] is True
    assert described["max_upload_mb"] == 0.25
    assert described["run"] == served_run.name
    metrics = described["metrics"]
    assert metrics and all(isinstance(v, (int, float, dict, list, str)) for v in metrics.values())


def test_page_is_self_contained_html(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert 'type="file"' in html and "<script>" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    assert "innerHTML" not in html


def test_predict_answers_like_the_python_api(client, classifier, photos):
    for truth in ("cat", "dog"):
        path = photos[truth][0]
        answer = post_file(client, path.read_bytes(), path.name).json()
        expected = classifier.predict(path)[0]
        assert answer["label"] == expected.label == truth
        assert answer["probability"] == pytest.approx(expected.probability, abs=1e-5)
        assert list(answer["probabilities"]) == ["cat", "dog"]
        assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)
        assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert answer["time_ms"] > 0 and answer["time_ms"] >= answer["timing"]["decode_ms"]
        assert "explanation" not in answer


def test_raw_body_gives_the_same_answer_as_multipart(client, photos):
    data = photos["dog"][1].read_bytes()
    raw = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200
    assert raw.json()["probabilities"] == pytest.approx(post_file(client, data).json()["probabilities"], abs=1e-6)


def test_explain_returns_a_png_overlay_at_the_model_size(client, photos):
    answer = post_file(client, photos["cat"][0].read_bytes(), query="?explain=true").json()
    explanation = answer["explanation"]
    assert answer["explain_error"] is None
    assert explanation["label"] == answer["label"] and explanation["class_index"] == answer["class_index"]
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert overlay.format == "PNG" and overlay.mode == "RGB"
    assert overlay.size == (160, 160) == (explanation["width"], explanation["height"])
    assert np.asarray(overlay).std() > 5  # a picture, not a blank
    assert answer["timing"]["explain_ms"] > 0


# --------------------------------------------------------------------------- bad input


def test_not_an_image_is_415(client):
    assert_refused(post_file(client, b"just some text, not a photo\n", "notes.txt"), 415, "not an image")


def test_an_unserved_format_is_415(client):
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"  # Pillow reads EPS via Ghostscript
    assert_refused(post_file(client, eps, "drawing.eps"), 415, "jpeg, png")


def test_truncated_jpeg_is_400(client, photos):
    data = photos["cat"][2].read_bytes()
    assert_refused(post_file(client, data[: len(data) // 3]), 400, "truncated or corrupt")


def test_jpeg_with_a_garbage_body_is_400(client, photos):
    data = photos["cat"][2].read_bytes()
    garbage = data[:20] + bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))
    assert_refused(post_file(client, garbage), 400, "corrupt")


def test_empty_upload_is_400(client):
    assert_refused(post_file(client, b""), 400, "empty")
    assert_refused(client.post("/predict", content=b""), 400, "empty")


def test_decompression_bomb_is_400(client):
    assert_refused(post_file(client, png_declaring(100_000, 100_000), "bomb.png"), 400, "too large")


def test_oversized_upload_is_413(client, photos):
    big = photos["dog"][0].read_bytes() * 30  # over the 0.25 MiB limit of this app
    assert len(big) > 0.25 * 2**20
    assert_refused(post_file(client, big), 413, "0.25 mib")
    assert_refused(client.post("/predict", content=big, headers={"content-type": "image/jpeg"}), 413, "limit")


def test_wrong_field_name_is_422_and_names_the_field(client, photos):
    response = post_file(client, photos["cat"][0].read_bytes(), field="image")
    assert_refused(response, 422, "'file'", "'image'")


def test_a_path_is_never_read(client):
    # as a multipart text field, a urlencoded form and a raw body: never a file name to open
    multipart = client.post("/predict", data={"file": "/etc/hostname"}, files={"other": ("a.txt", b"x")})
    assert_refused(multipart, 422, "no file")
    assert_refused(client.post("/predict", data={"file": "/etc/hostname"}), 415, "not an image")
    assert_refused(client.post("/predict", content=b"/etc/hostname"), 415, "not an image")


def test_two_files_are_refused(client, photos):
    data = photos["cat"][0].read_bytes()
    response = client.post("/predict", files=[("file", ("a.jpg", data)), ("file", ("b.jpg", data))])
    assert response.status_code == 400 and response.json()["error"]


def test_wrong_method_and_route_and_query(client):
    assert_refused(client.get("/predict"), 405, "method not allowed")
    assert_refused(client.get("/predict/../model.json"), 404)
    assert_refused(client.post("/predict?explain=maybe", content=b"x"), 422, "explain")


def test_a_good_request_after_bad_ones_still_works(client, photos):
    assert post_file(client, b"garbage").status_code == 415
    assert post_file(client, png_declaring(60_000, 60_000)).status_code == 400
    assert post_file(client, photos["cat"][0].read_bytes()[:500]).status_code == 400
    answer = post_file(client, photos["dog"][0].read_bytes())
    assert answer.status_code == 200 and answer.json()["label"] == "dog"


def test_concurrent_requests_get_their_own_answers(client, classifier, photos, monkeypatch):
    """Good and bad uploads from 8 threads at once: every good one gets exactly its own probabilities
    (as `Classifier.predict` computes them alone), every bad one its own error."""
    goods = [p for name in ("cat", "dog") for p in photos[name]]
    expected = {p: classifier.predict(p)[0].probabilities for p in goods}
    jobs = [(p, p.read_bytes()) for p in goods] * 2 + [(None, b"not an image")] * 6
    order = np.random.default_rng(1).permutation(len(jobs))
    before = client.get("/health").json()
    batcher = client.app.state.model.batcher
    model_call = batcher.run_batch

    def slow_call(batch: np.ndarray) -> np.ndarray:  # requests pile up meanwhile: batches of several form
        time.sleep(0.05)
        return model_call(batch)

    monkeypatch.setattr(batcher, "run_batch", slow_call)

    def send(index: int):
        path, data = jobs[index]
        return path, post_file(client, data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, order))
    for path, response in results:
        if path is None:
            assert response.status_code == 415
        else:
            assert response.status_code == 200, response.text
            assert response.json()["probabilities"] == pytest.approx(expected[path], abs=1e-5)
    after = client.get("/health").json()
    assert after["served"] - before["served"] == 2 * len(goods)
    assert after["batches"] - before["batches"] < 2 * len(goods)  # some calls served several requests
    assert 1 < after["largest_batch"] <= 8
    assert after["pending"] == 0


def test_a_model_without_grad_cam_still_predicts_and_says_why(served_run, photos, monkeypatch):
    import imgcls.explain

    monkeypatch.setattr(imgcls.explain, "supports_grad_cam", lambda classifier: False)
    with TestClient(create_app(served_run)) as plain:
        assert plain.get("/model").json()["explain"] is False
        answer = post_file(plain, photos["dog"][0].read_bytes(), query="?explain=true").json()
    assert answer["label"] == "dog"
    assert answer["explanation"] is None and "not available" in answer["explain_error"]


def test_by_default_the_batch_size_is_measured(served_run):
    with TestClient(create_app(served_run)) as default:
        health = default.get("/health").json()
    assert health["max_batch"] in (1, 2, 4, 8, 16)
    costs = health["batch_cost_ms_per_image"]
    assert list(costs) == ["1", "2", "4", "8", "16"] and all(cost > 0 for cost in costs.values())
    assert costs[str(health["max_batch"])] <= 1.05 * min(costs.values())
