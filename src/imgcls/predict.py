"""Streaming prediction over any number of files, resumable, on ONNX Runtime without torch.

    imgcls predict RUN photos/ --output predictions.parquet      # or .csv / .jsonl

- Files are listed lazily (folders walked one directory at a time, globs, `--from-list` files read
  line by line): a million files are never held in memory before the first prediction.
- Decoding runs in a thread pool ahead of the model (bounded look-ahead), so the two overlap.
- Rows go out in chunks as they are ready: CSV and JSON Lines are appended chunk by chunk and
  flushed; Parquet is a folder of part files, each written atomically, which pandas, pyarrow,
  DuckDB and Spark read as one table. A kill loses at most the chunk in flight; a rerun with the
  same `--output` skips every file already there and adds the rest, so each file is there once.
- With the run's `model.onnx` (written when training ends) nothing here imports torch: one photo
  is answered in about the time it takes to start Python and ONNX Runtime.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import io
import json
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgcls.data.decode import BadImageError, is_image_file, load_image
from imgcls.errors import ImgclsError
from imgcls.files import atomic_path, display_path
from imgcls.modelfile import sidecar_path
from imgcls.run import Run
from imgcls.run.html import bar, card, fields, percent, table

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
CHUNK = 256  # rows per chunk written: what a kill can cost
SHOWN_CLASSES = 5  # probabilities a Prediction shows in a notebook


@dataclass
class Prediction:
    """One input's answer; unreadable files get `error` instead of a label."""

    source: str
    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def top_k(self, k: int) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: -item[1])[:k]

    def _repr_html_(self) -> str:
        """Jupyter's view: the label and its probability, the top probabilities, the file."""
        if self.error is not None:
            return card("unreadable", fields([("file", self.source), ("error", self.error)]), "prediction")
        top = table([(label, percent(p), bar(p)) for label, p in self.top_k(SHOWN_CLASSES)])
        body = fields([("file", self.source), ("probabilities", top)])
        return card(f"{self.label}: {percent(self.probability)}", body, "prediction")


class Predictor(Protocol):
    """What streams predictions: the ONNX predictor here, or `imgcls.inference.Classifier` (PyTorch)."""

    @property
    def classes(self) -> list[str]: ...

    def pixels(self, item: Any) -> np.ndarray: ...

    def probabilities(self, pixels: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------- the model, without torch


class OnnxPredictor:
    """An exported model in ONNX Runtime, fed as its `model.onnx.json` says (the export contract).
    `model` is the ONNX file or its bytes (as Ray ships it to workers that cannot see the run)."""

    def __init__(self, model: Path | bytes, description: dict[str, Any], threads: int | None = None):
        import onnxruntime as ort

        self.classes: list[str] = list(description["output"]["classes"])
        self.size = tuple(description["preprocessing"]["size"])
        self.channels = 3 if description["input"]["channels"] == "RGB" else 1
        self.resize = description["preprocessing"]["resize"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        model = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def open(cls, onnx_path: Path, threads: int | None = None) -> OnnxPredictor:
        return cls(onnx_path, read_description(onnx_path), threads)

    def pixels(self, item: str | Path) -> np.ndarray:
        return load_image(item, self.size, self.channels, self.resize)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 -> (N, n_classes)."""
        batch = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]


def onnx_predictor(run: Run | Path | str, engine: str = "auto") -> OnnxPredictor | None:
    """The run's model on ONNX Runtime alone, when `model.onnx` (engine auto or onnx) or
    `model.int8.onnx` (engine int8) is there and newer than the weights; None otherwise: then
    `imgcls.inference.Classifier` (PyTorch) predicts, and exports the ONNX file when it can."""
    run = Run.open(run)
    path = run.int8_onnx_path if engine == "int8" else run.onnx_path
    current = path.is_file() and sidecar_path(path).is_file() and not run.is_stale(path)
    if engine not in ("auto", "onnx", "int8") or not current:
        return None  # int8 missing or stale: `Classifier.load` says what to do
    try:
        return OnnxPredictor.open(path)
    except Exception as error:  # onnxruntime's own exception types for a bad file
        if engine != "auto":
            raise ImgclsError(f"{display_path(path)}: cannot open this ONNX model ({error})") from None
        return None


def read_description(onnx_path: Path) -> dict[str, Any]:
    """The sidecar `model.onnx.json`: input size, channels, resize and classes."""
    return json.loads(sidecar_path(onnx_path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- which files


def iter_files(
    patterns: Iterable[str | Path], from_list: Path | None = None, name_glob: str | None = None
) -> Iterator[Path]:
    """Files, folders (recursively, images only, in name order; with `name_glob` only the file names
    matching it) and glob patterns, then the lines of `from_list`; lazily. A path that does not
    exist is yielded (it becomes an error row)."""
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            yield from _walk(path, name_glob)
        elif path.exists() or path.is_symlink():
            yield path
        elif glob.has_magic(str(pattern)):
            found = False
            for match in sorted(glob.iglob(str(pattern), recursive=True)):
                if os.path.isfile(match):
                    found = True
                    yield Path(match)
            if not found:
                raise ImgclsError(f"{pattern}: no file matches this pattern")
        else:
            yield path
    if from_list is not None:
        yield from _listed(from_list)


def _walk(folder: Path, name_glob: str | None = None) -> Iterator[Path]:
    """One directory at a time: memory follows the widest folder, not the number of files."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), name_glob)
        elif fnmatch.fnmatch(entry.name, name_glob) if name_glob else is_image_file(Path(entry.name)):
            yield Path(entry.path)


def _listed(from_list: Path) -> Iterator[Path]:
    try:
        handle = open(from_list, encoding="utf-8")  # noqa: SIM115 - read lazily, closed below
    except OSError as error:
        raise ImgclsError(f"{display_path(from_list)}: cannot read the file list ({error.strerror})") from None
    with handle:
        for line in handle:
            if line.strip():
                yield Path(line.rstrip("\n"))


# --------------------------------------------------------------------------- predicting


def predict_stream(
    model: Predictor, items: Iterable[Any], batch_size: int = 16, workers: int | None = None
) -> Iterator[Prediction]:
    """Predictions in input order; decoding runs ahead in threads (at most a few batches ahead)."""
    batch: list[tuple[Any, np.ndarray | BadImageError]] = []
    for decoded in _decoded(model, items, workers or os.cpu_count() or 1, batch_size):
        batch.append(decoded)
        if len(batch) == batch_size:
            yield from _answer(model, batch)
            batch = []
    yield from _answer(model, batch)


def _decoded(model: Predictor, items: Iterable[Any], workers: int, batch_size: int) -> Iterator[tuple]:
    """(item, pixels or BadImageError) in input order, decoded in a thread pool with bounded look-ahead."""
    ahead = max(batch_size * 4, workers * 2)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgcls-decode") as pool:
        pending: deque[tuple[Any, Future]] = deque()
        for item in items:
            pending.append((item, pool.submit(_safe_pixels, model, item)))
            if len(pending) >= ahead:
                ready, future = pending.popleft()
                yield ready, future.result()
        while pending:
            ready, future = pending.popleft()
            yield ready, future.result()


def _safe_pixels(model: Predictor, item: Any) -> np.ndarray | BadImageError:
    try:
        return model.pixels(item)
    except BadImageError as error:
        return error


def _answer(model: Predictor, batch: list) -> Iterator[Prediction]:
    good = [pixels for _, pixels in batch if isinstance(pixels, np.ndarray)]
    probs = iter(model.probabilities(np.stack(good)) if good else [])
    classes = model.classes
    for item, pixels in batch:
        answer = Prediction(source=describe(item))
        if isinstance(pixels, BadImageError):
            answer.error = pixels.reason
        else:
            row = next(probs)
            best = int(np.argmax(row))
            answer.label, answer.probability = classes[best], float(row[best])
            answer.probabilities = {c: float(p) for c, p in zip(classes, row, strict=True)}
        yield answer


def describe(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return display_path(item)
    if isinstance(item, np.ndarray):
        return f"<array {'x'.join(map(str, item.shape))}>"
    return f"<PIL image {item.width}x{item.height}>"


# --------------------------------------------------------------------------- output files


class ResultFile:
    """A CSV, JSON Lines or Parquet output that grows chunk by chunk and knows which files it holds."""

    def __init__(self, path: Path, classes: list[str]):
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise ImgclsError(f"--output {display_path(path)}: use a .csv, .jsonl or .parquet file name")
        self.path, self.kind, self.classes = path, FORMATS[suffix], classes
        self.columns = ["path", "label", "probability", *classes, "error"]
        self.done: set[str] = set()
        self.parts = 0
        if self.kind == "parquet":
            self._open_parquet()
        else:
            self._open_text()

    # -- reading what an earlier run wrote

    def _open_text(self) -> None:
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise ImgclsError(f"--output {display_path(self.path)}: is a folder")
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a line cut by a kill is dropped and predicted again
        if len(complete) != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        text = complete.decode("utf-8")
        if self.kind == "csv":
            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames and reader.fieldnames != self.columns:
                raise ImgclsError(f"--output {display_path(self.path)}: its columns are not this model's classes")
            self.done = {row["path"] for row in reader}
        else:
            self.done = {json.loads(line)["path"] for line in text.splitlines() if line.strip()}

    def _open_parquet(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ImgclsError(f"--output {display_path(self.path)}: exists and is not a folder of Parquet parts")
        self.path.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet as pq

        for part in sorted(self.path.glob("part-*.parquet")):
            if pq.read_schema(part).names != self.columns:
                raise ImgclsError(f"--output {display_path(self.path)}: its columns are not this model's classes")
            self.done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
            self.parts = max(self.parts, int(part.stem.split("-")[1]) + 1)

    # -- writing

    def append(self, rows: list[Prediction]) -> None:
        if not rows:
            return
        records = [self._record(row) for row in rows]
        if self.kind == "parquet":
            self._append_parquet(records)
        else:
            self._append_text(records)
        self.done.update(record["path"] for record in records)

    def _record(self, row: Prediction) -> dict[str, Any]:
        values = {"path": row.source, "label": row.label, "probability": row.probability}
        values |= {name: row.probabilities.get(name) for name in self.classes}
        return values | {"error": row.error}

    def _append_text(self, records: list[dict]) -> None:
        buffer = io.StringIO()
        if self.kind == "csv":
            writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
            if not self.path.exists() or self.path.stat().st_size == 0:
                writer.writeheader()
            writer.writerows(records)
        else:
            buffer.writelines(json.dumps(record) + "\n" for record in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())  # one write per chunk
            handle.flush()
            os.fsync(handle.fileno())

    def _append_parquet(self, records: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(records, schema=self._schema(pa))
        with atomic_path(self.path / f"part-{self.parts:06d}.parquet") as temporary:
            pq.write_table(table, temporary)
        self.parts += 1

    def _schema(self, pa):
        fields = [pa.field("path", pa.string()), pa.field("label", pa.string())]
        fields += [pa.field(name, pa.float64()) for name in ["probability", *self.classes]]
        return pa.schema([*fields, pa.field("error", pa.string())])


@dataclass
class StreamSummary:
    output: str
    already_done: int
    predicted: int
    failed: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds else 0.0


def predict_to_file(
    model: Predictor,
    files: Iterable[Path],
    output: Path,
    batch_size: int = 16,
    chunk: int = CHUNK,
    progress: bool = False,
) -> StreamSummary:
    """Predict `files` into `output`, skipping those already there; resumable at any moment."""
    import time

    from imgcls.progress import progress_bar

    result = ResultFile(Path(output), model.classes)
    already = len(result.done)
    todo = (path for path in files if display_path(path) not in result.done)
    started, predicted, failed, rows = time.perf_counter(), 0, 0, []
    with progress_bar(progress, f"Predicting into {display_path(output)}", None, unit="images") as advance:
        for row in predict_stream(model, todo, batch_size):
            rows.append(row)
            predicted += 1
            failed += row.error is not None
            advance(1)
            if len(rows) >= chunk:
                result.append(rows)
                rows = []
        result.append(rows)
    return StreamSummary(str(output), already, predicted, failed, round(time.perf_counter() - started, 2))
