"""`imgcls predict RUN PATH... --output FILE --engine ray`: the same prediction on Ray Data.

Ray Data runs the ONNX model in a pool of actors (`map_batches` with a class: one ONNX Runtime
session per actor, one CPU each, `--workers` of them), which decode their share of the files
where they run. Rows come back to this process and go into the same `ResultFile` as the local
engine's (CSV, JSON Lines or a folder of Parquet parts), chunk by chunk: the same columns and
labels, the same resume by path after a kill, and the output is readable at every moment. The
actors get the model's bytes, so only the photos need to be visible to every node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.cluster import cluster_cpus, connect
from imgcls.errors import ImgclsError
from imgcls.files import display_path
from imgcls.predict import CHUNK, OnnxPredictor, Prediction, ResultFile, StreamSummary, predict_stream
from imgcls.predict import read_description as read_onnx_description
from imgcls.run import Run


def predict_on_ray(
    run: Run | Path | str,
    files: Iterable[Path],
    output: Path,
    batch_size: int = 16,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> StreamSummary:
    """Predict `files` into `output` on Ray Data, skipping those already there; resumable at any moment."""
    from imgcls.progress import progress_bar

    model, description = _onnx_model(Run.open(run))
    result = ResultFile(Path(output), list(description["output"]["classes"]))
    already = len(result.done)
    todo = [{"file": str(Path(f).absolute()), "path": display_path(f)} for f in files]
    todo = [item for item in todo if item["path"] not in result.done]
    started, predicted, failed = time.perf_counter(), 0, 0
    if todo:
        ray = connect(address)
        rows = _predicted_rows(ray, todo, model, description, batch_size, workers or cluster_cpus(ray))
        with progress_bar(progress, f"Predicting on Ray into {display_path(output)}", len(todo), unit="images") as bar:
            for chunk in rows:
                result.append(chunk)
                predicted += len(chunk)
                failed += sum(row.error is not None for row in chunk)
                bar(len(chunk))
    return StreamSummary(str(output), already, predicted, failed, round(time.perf_counter() - started, 2))


def _onnx_model(run: Run) -> tuple[bytes, dict[str, Any]]:
    """The run's current `model.onnx` and its description; exported first when missing or stale."""
    if not run.onnx_path.is_file() or run.onnx_is_stale:
        from imgcls.export import export_onnx

        export_onnx(run)
    return run.onnx_path.read_bytes(), read_onnx_description(run.onnx_path)


def _predicted_rows(
    ray, todo: list[dict], model: bytes, description: dict, batch_size: int, workers: int
) -> Iterator[list[Prediction]]:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts rows as they are written
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plans and timings stay in Ray's log files
    dataset = ray.data.from_items(todo).map_batches(
        OnnxActor,
        fn_constructor_kwargs={"model": model, "description": description},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        max_restarts=0,  # a failed actor fails the command (its rows are predicted again on rerun)
    )
    classes = list(description["output"]["classes"])
    try:
        for batch in dataset.iter_batches(batch_size=CHUNK, batch_format="numpy"):
            yield list(_predictions(batch, classes))
    except ray.exceptions.RayError as error:
        lines = str(error).strip().splitlines()  # a RayTaskError holds the worker's traceback: its cause is last
        reason = lines[-1][:200] if lines else type(error).__name__
        raise ImgclsError(f"--engine ray: prediction failed on the cluster ({reason})") from None


class OnnxActor:
    """One Ray Data actor: an ONNX Runtime session on one core; decoding overlaps it in one thread."""

    def __init__(self, model: bytes, description: dict[str, Any]):
        self.model = OnnxPredictor(model, description, threads=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(name) for name in batch["file"]]
        answers = list(predict_stream(self.model, files, batch_size=len(files), workers=1))
        n_classes = len(self.model.classes)
        return {
            "path": batch["path"],
            "label": np.array([a.label or "" for a in answers], dtype=object),
            "probabilities": np.array(
                [
                    [a.probabilities[c] for c in self.model.classes] if a.error is None else [np.nan] * n_classes
                    for a in answers
                ],
                dtype=np.float64,
            ),
            "error": np.array([a.error or "" for a in answers], dtype=object),
        }


def _predictions(batch: dict[str, np.ndarray], classes: list[str]) -> Iterator[Prediction]:
    for path, label, row, error in zip(
        batch["path"], batch["label"], batch["probabilities"], batch["error"], strict=True
    ):
        if error:
            yield Prediction(source=str(path), error=str(error))
        else:
            probabilities = {c: float(p) for c, p in zip(classes, row, strict=True)}
            yield Prediction(str(path), str(label), probabilities[str(label)], probabilities)
