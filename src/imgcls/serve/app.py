"""The web app: `create_app(run)` serves one trained model as a page and a JSON API.

    GET  /          the page (self-contained HTML, no network access needed)
    POST /predict   an image as multipart field `file` or as the raw body -> label, probabilities, time;
                    `?explain=true` adds a Grad-CAM overlay (PNG, base64) when the model has one
    GET  /model     classes, architecture, image size, training metrics
    GET  /health    liveness and batching counters

Every request is decoded on its own (a bad file fails only itself), then concurrent requests share
one model call through `MicroBatcher`. Errors are JSON `{"error": "..."}` with a 4xx status. The
server reads no path a client names and unpickles nothing: uploads are bytes, models safetensors/ONNX.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from imgcls.engine import OnnxModule
from imgcls.errors import ImgclsError
from imgcls.inference import Classifier
from imgcls.run import Run
from imgcls.serve.batching import MicroBatcher, choose_max_batch
from imgcls.serve.guard import server_options
from imgcls.serve.uploads import UploadError, UploadLimit, decode_upload, too_large_message

log = logging.getLogger(__name__)

FILE_FIELD = "file"
SETTINGS_ENV = "IMGCLS_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process
PAGE_POLICY = (  # the page runs its own inline script and shows blob:/data: images; nothing else loads
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class ServeSettings:
    run: str
    engine: str = "auto"  # auto | onnx | int8 | torch, as `imgcls predict --engine`
    max_upload_mb: float = 20.0
    max_batch: int | str = "auto"  # most images per model call; 1 turns batching off; auto: measured at start
    batch_window_ms: float = 3.0  # longest wait for requests still decoding to join a batch
    max_pending: int = 256  # requests decoding or queued before new ones get 503
    body_timeout_s: float = 30.0  # longest wait for a whole request body (slow clients get 408)

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, str) and self.max_batch.isdigit():
            self.max_batch = int(self.max_batch)
        if self.max_batch != "auto" and not (isinstance(self.max_batch, int) and self.max_batch >= 1):
            raise ImgclsError(f"--max-batch {self.max_batch!r}: use 'auto' or a number >= 1")
        if self.max_upload_mb <= 0 or self.batch_window_ms < 0 or self.max_pending < 1 or self.body_timeout_s <= 0:
            raise ImgclsError("--max-upload-mb and --body-timeout must be > 0 and --batch-window-ms >= 0")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def create_app(run: Path | str, **settings: Any) -> FastAPI:
    """The app for one run folder; `settings` are `ServeSettings` fields (max_upload_mb=20, max_batch=8...)."""
    return build_app(ServeSettings(run=str(run), **settings))


def create_app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes: the settings come as JSON in $IMGCLS_SERVE_SETTINGS."""
    return build_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


def build_app(settings: ServeSettings) -> FastAPI:
    folder = Run.open(settings.run)
    classifier = Classifier.load(folder, engine=settings.engine)
    if classifier.onnx is not None:  # between calls, ONNX Runtime's threads must leave the cores to decoding
        classifier.onnx = OnnxModule(classifier.onnx.path, spin=False)
    model = ModelService(classifier, folder, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        model.batcher.close()

    app = FastAPI(
        title=f"imgcls: {folder.path.resolve().name}",
        docs_url=None,  # the interactive docs load scripts from a CDN: no internet here
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.model = model
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes, body_timeout_s=settings.body_timeout_s)
    _add_error_handlers(app)
    page = files("imgcls.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "engine": classifier.engine, "pending": model.batcher.pending, **model.counters()}

    @app.get("/model")
    async def describe() -> dict:
        return model.description

    @app.post("/predict", openapi_extra=PREDICT_BODY_DOCS)
    async def predict(request: Request, explain: bool = False) -> dict:
        """Classify one image, sent as multipart field `file` or as the raw request body."""
        started = time.perf_counter()
        if model.batcher.pending >= settings.max_pending:
            raise UploadError(503, "the server is busy; retry in a moment")
        data = await read_image_bytes(request, settings.max_upload_bytes)
        return await model.predict(data, explain, started)

    return app


class ModelService:
    """The classifier behind the routes: decode in threads, batch through the worker, explain on request."""

    def __init__(self, classifier: Classifier, folder: Run, settings: ServeSettings):
        self.classifier = classifier
        self.settings = settings
        self.decoders = anyio.CapacityLimiter(os.cpu_count() or 1)  # decoding beyond the cores only queues
        self.explainers = anyio.CapacityLimiter(1)  # Grad-CAM runs the PyTorch model with gradients: one at a time
        self.explain_problem = _grad_cam_problem(classifier)
        self.description = describe_model(classifier, folder, settings, self.explain_problem is None)
        self.served = 0
        self.refused = 0
        pixels = self._warm_up()
        self.batch_costs: dict[int, float] = {}
        if settings.max_batch == "auto":
            self.max_batch, self.batch_costs = choose_max_batch(classifier.probabilities, pixels)
            costs = ", ".join(f"{size}: {cost:.1f}" for size, cost in self.batch_costs.items())
            log.info(
                "micro-batching up to %d image(s) per call (CPU ms per image by batch size: %s)", self.max_batch, costs
            )
        else:
            self.max_batch = int(settings.max_batch)
        self.batcher = MicroBatcher(classifier.probabilities, self.max_batch, settings.batch_window_ms)

    def _warm_up(self) -> np.ndarray:
        """Pay for lazy set-up (Pillow plugins, ONNX Runtime buffers, Grad-CAM's probe) before the first
        request; returns a decoded photo-like image (noise) for measuring batch sizes."""
        size = self.classifier.spec.image_size
        noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        photo = io.BytesIO()
        Image.fromarray(noise).save(photo, format="JPEG")
        pixels = decode_upload(photo.getvalue(), self.classifier.spec)
        self.classifier.probabilities(pixels[None])
        if self.explain_problem is None:
            self.classifier.explain(pixels)
        return pixels

    def counters(self) -> dict:
        stats = self.batcher.stats
        return {
            "served": self.served,
            "refused": self.refused,
            "max_batch": self.max_batch,
            "batch_cost_ms_per_image": self.batch_costs,  # measured at start when --max-batch auto
            "batches": stats.batches,
            "largest_batch": stats.largest,
        }

    async def predict(self, data: bytes, explain: bool, started: float) -> dict:
        """`started`: when the request arrived, so `time_ms` includes receiving the upload."""
        received = time.perf_counter()
        with self.batcher.reserve() as place:
            pixels = await anyio.to_thread.run_sync(decode_upload, data, self.classifier.spec, limiter=self.decoders)
            decoded = time.perf_counter()
            row = await asyncio.wrap_future(place.submit(pixels))
        predicted = time.perf_counter()
        best = int(np.argmax(row))
        classes = self.classifier.classes
        answer: dict[str, Any] = {
            "label": classes[best],
            "probability": float(row[best]),
            "class_index": best,
            "probabilities": {name: float(p) for name, p in zip(classes, row, strict=True)},
        }
        timing = {
            "read_ms": _ms(received - started),
            "decode_ms": _ms(decoded - received),
            "model_ms": _ms(predicted - decoded),  # waiting for a batch, then the batch's model call
        }
        if explain:
            answer["explanation"], answer["explain_error"] = await self._explain(pixels, best)
            timing["explain_ms"] = _ms(time.perf_counter() - predicted)
        answer["time_ms"] = _ms(time.perf_counter() - started)
        answer["timing"] = timing
        self.served += 1
        return answer

    async def _explain(self, pixels: np.ndarray, class_index: int) -> tuple[dict | None, str | None]:
        if self.explain_problem is not None:
            return None, self.explain_problem
        try:
            return await anyio.to_thread.run_sync(self._explained, pixels, class_index, limiter=self.explainers), None
        except Exception as error:  # the prediction stands even when its explanation fails
            log.exception("Grad-CAM failed")
            return None, f"Grad-CAM failed ({type(error).__name__})"

    def _explained(self, pixels: np.ndarray, class_index: int) -> dict:
        """Grad-CAM and its PNG, in a worker thread: neither should hold up the event loop."""
        explanation = self.classifier.explain(pixels, class_index)
        height, width = explanation.overlay.shape[:2]
        return {
            "label": explanation.label,
            "class_index": explanation.class_index,
            "width": width,
            "height": height,
            "overlay_png": base64.b64encode(_png(explanation.overlay)).decode("ascii"),
        }


async def read_image_bytes(request: Request, max_bytes: int) -> bytes:
    """The upload: multipart field `file`, or the whole body for any other content type."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        data = await request.body()
    else:
        form = await request.form(max_files=1, max_fields=16)
        try:
            upload = form.get(FILE_FIELD)
            if not isinstance(upload, UploadFile):
                fields = ", ".join(repr(name) for name in form) or "none"
                raise UploadError(422, f"no file in form field {FILE_FIELD!r} (fields sent: {fields})")
            data = await upload.read(max_bytes + 1)
        finally:
            await form.close()
    if len(data) > max_bytes:
        raise UploadError(413, too_large_message(max_bytes))
    return data


def describe_model(classifier: Classifier, folder: Run, settings: ServeSettings, explains: bool) -> dict:
    """What `GET /model` says: the model file's contract plus the run's training metrics."""
    spec = classifier.spec
    return {
        "run": folder.path.resolve().name,
        "architecture": spec.architecture,
        "classes": list(spec.classes),
        "image_size": spec.image_size,
        "channels": spec.channels,
        "resize": spec.resize,
        "output": spec.output,
        "engine": classifier.engine,
        "explain": explains,
        "max_upload_mb": settings.max_upload_mb,
        "metrics": _training_metrics(folder) or spec.metrics,
    }


def _training_metrics(folder: Run) -> dict:
    try:
        metrics = folder.metrics
    except (OSError, ImgclsError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _grad_cam_problem(classifier: Classifier) -> str | None:
    """None when Grad-CAM works for this model, else why not (said in every explain=true answer)."""
    from imgcls.explain import supports_grad_cam

    try:
        if supports_grad_cam(classifier):
            return None
    except Exception as error:  # an architecture the probe cannot run: serve predictions anyway
        log.warning("Grad-CAM unavailable: %s", error)
    return f"Grad-CAM is not available for model {classifier.spec.architecture!r} (no convolutional feature map)"


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal is JSON {"error": message}; a bug answers 500 without details and the server goes on."""

    def refused(request: Request, status: int, message: str, headers: dict | None = None) -> JSONResponse:
        service = getattr(request.app.state, "model", None)
        if service is not None:
            service.refused += 1
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        headers = {"Connection": "close"} if error.status in (408, 413) else None  # the rest of the body is unread
        return refused(request, error.status, error.message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return refused(request, error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return refused(request, 422, f"invalid request: {problems}")

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, error: ClientDisconnect) -> JSONResponse:
        log.debug("client left during its upload: %s %s", request.method, request.url.path)  # nobody to answer
        return refused(request, 400, "the upload was cut off")

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        log.exception("request failed: %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error while handling this request"}, status_code=500)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


PREDICT_BODY_DOCS = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {FILE_FIELD: {"type": "string", "format": "binary"}}}
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


# --------------------------------------------------------------------------- running it


def run_server(run: Path | str, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, **settings: Any) -> None:
    """Serve with uvicorn until interrupted. The model is loaded (and exported to ONNX if needed) before
    listening, so a bad run folder is a one-line error and N workers do not race to export it."""
    import uvicorn

    chosen = ServeSettings(run=str(run), **settings)
    log.setLevel(logging.INFO)  # a server says what it chose (batch size) as uvicorn says where it listens
    if not _is_loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can use the model (no authentication)", host)
    if workers <= 1:
        uvicorn.run(build_app(chosen), **server_options(host=host, port=port, log_level="info"))
        return
    Classifier.load(Run.open(chosen.run), engine=chosen.engine)  # fail here, and export ONNX once, not per worker
    os.environ[SETTINGS_ENV] = json.dumps(asdict(chosen))
    target = "imgcls.serve.app:create_app_from_environment"
    uvicorn.run(target, **server_options(factory=True, host=host, port=port, workers=workers))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
