"""Commands that put a model to work: `predict`, `export`, `serve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli.app import RunArg, app
from imgcls.cli.render import err_console, print_predictions, print_stream_summary
from imgcls.errors import ImgclsError

FORMATS = ("table", "csv", "json")


@app.command()
def predict(
    run: RunArg,
    paths: Annotated[list[str] | None, typer.Argument(help="Image files, folders or glob patterns")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Stream rows into FILE.csv, .jsonl or .parquet; a rerun adds what is missing")
    ] = None,
    from_list: Annotated[Path | None, typer.Option(help="A file of image paths, one a line")] = None,
    name_glob: Annotated[
        str | None, typer.Option("--glob", help="In folders, only file names matching this, e.g. '*.jpg'")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar with --output")] = True,
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json (without --output)")] = "table",
    top_k: Annotated[int, typer.Option(help="Classes shown per image")] = 1,
    batch_size: Annotated[int, typer.Option(help="Images per batch (16 is fastest on a 2-core CPU)")] = 16,
    engine: Annotated[
        str,
        typer.Option(
            help="torch, onnx (RUN/model.onnx), int8 (export --quantize int8), auto (onnx, exported when missing) "
            "or ray (Ray Data, with --output)"
        ),
    ] = "auto",
    workers: Annotated[int | None, typer.Option(help="Ray actors, one CPU each (default: the cluster's CPUs)")] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start one here)")
    ] = None,
) -> None:
    """Predict classes for images; unreadable files get an error row and a non-zero exit code. With
    --output, results stream into a CSV, JSON Lines or Parquet file, and a rerun adds only what is missing."""
    from imgcls.predict import iter_files, predict_stream, predict_to_file

    if output_format not in FORMATS:
        raise ImgclsError(f"--format {output_format!r}: use {', '.join(FORMATS)}")
    if not paths and from_list is None:
        raise ImgclsError("give image files, folders or patterns, or --from-list FILE")
    if engine == "ray" and output is None:
        raise ImgclsError("--engine ray writes its rows into a file: add --output FILE.parquet (or .csv, .jsonl)")
    files = iter_files(paths or [], from_list, name_glob)
    if output is not None:
        if engine == "ray":
            from imgcls.cluster.predict import predict_on_ray

            summary = predict_on_ray(run, files, output, batch_size, workers, address, progress)
        else:
            summary = predict_to_file(_local_model(run, engine), files, output, batch_size, progress=progress)
        print_stream_summary(summary)
        failed, total = summary.failed, summary.predicted
    else:
        model = _local_model(run, engine)
        predictions = list(predict_stream(model, files, batch_size))
        print_predictions(predictions, model.classes, output_format, top_k)
        failed, total = sum(p.error is not None for p in predictions), len(predictions)
    if failed:
        err_console.print(f"[red]{failed} of {total} file(s) could not be read[/red]")
        raise typer.Exit(1)


def _local_model(run: Path, engine: str):
    """ONNX Runtime on an up-to-date model.onnx; else PyTorch (which exports it for next time)."""
    from imgcls.predict import onnx_predictor

    model = onnx_predictor(run, engine)
    if model is None:
        from imgcls.inference import Classifier

        model = Classifier.load(run, engine=engine)
    return model


@app.command()
def export(
    run: RunArg,
    export_format: Annotated[
        str, typer.Option("--format", help="onnx (ONNX Runtime) or hf (a Hugging Face folder in timm's layout + card)")
    ] = "onnx",
    out: Annotated[Path | None, typer.Option(help="File or folder to write (default: RUN/model.onnx, RUN/hf)")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version")] = 17,
    push: Annotated[
        str | None, typer.Option(help="hf: upload the folder to this Hub repository, e.g. user/cats-vs-dogs")
    ] = None,
    private: Annotated[bool, typer.Option(help="hf --push: create the repository private")] = False,
    license: Annotated[str, typer.Option(help="hf: the model card's license (a Hub license id)")] = "apache-2.0",
    quantize: Annotated[
        str | None, typer.Option(help="onnx: int8 (static QDQ), kept only if accurate and faster here")
    ] = None,
    calibration: Annotated[int | None, typer.Option(help="--quantize: training photos to calibrate on")] = None,
    force: Annotated[bool, typer.Option(help="--quantize: keep int8 even if slower or less accurate")] = False,
) -> None:
    """Export the model. onnx: float32 NCHW pixels 0..255 in, class probabilities out; OUT.json beside it
    describes the preprocessing. hf: model.safetensors + config.json + README.md (a model card from the
    run), loadable by timm for timm backbones and by imgcls.load. Prints the path written."""
    from imgcls.export import export_model
    from imgcls.modelfile import sidecar_path

    if push is not None:
        if export_format.lower() != "hf":
            raise ImgclsError("--push uploads a Hugging Face folder: add --format hf")
        from imgcls.export.hf import check_repo_id

        check_repo_id(push)
    if quantize is not None:
        if quantize.lower() != "int8" or export_format.lower() != "onnx":
            raise ImgclsError(f"--quantize {quantize}: only int8, with --format onnx")
        if out is not None:
            raise ImgclsError("--quantize int8 writes RUN/model.int8.onnx beside RUN/model.onnx: leave --out out")
        from imgcls.export.quantize import quantize_run

        print_quantized(quantize_run(run, calibration, force))
        return
    path = export_model(run, export_format, out, opset, license=license)
    sys.stdout.write(f"{path}\n")
    if export_format.lower() == "hf":
        from imgcls.export.hf import folder_layout, push_to_hub

        loads_with = "timm and imgcls" if folder_layout(path) == "timm" else "imgcls (not a timm architecture)"
        err_console.print(f"[dim]model card: {path / 'README.md'}; loads with {loads_with}[/dim]", highlight=False)
        if push is not None:
            url = push_to_hub(path, push, private)
            err_console.print(f"pushed to {url}", highlight=False, soft_wrap=True)
        return
    err_console.print(f"[dim]preprocessing and classes: {sidecar_path(path)}[/dim]", highlight=False, soft_wrap=True)


def print_quantized(result) -> None:
    """fp32 against int8, measured here, and what was kept."""
    from rich.table import Table

    table = Table("model", "accuracy", "images/s", title=f"{result.validation_images} validation photos")
    table.add_row("float32", f"{result.fp32_accuracy:.2%}", f"{result.fp32_images_per_s:,.1f}")
    table.add_row("int8", f"{result.int8_accuracy:.2%}", f"{result.int8_images_per_s:,.1f}")
    err_console.print(table)  # stdout is for the path written
    if result.kept:
        sys.stdout.write(f"{result.path}\n")
        err_console.print(f"int8 kept ({result.reason}); use it with --engine int8", highlight=False)
    else:
        err_console.print(f"[yellow]{result.reason}[/yellow]", highlight=False, soft_wrap=True)


@app.command()
def serve(
    run: RunArg,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback only by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes, each with its own copy of the model")] = 1,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload in MiB (larger: HTTP 413)")] = 20.0,
    max_batch: Annotated[
        str, typer.Option(help="Most images per model call: auto (measured at start: cheapest per image), N, 1 = off")
    ] = "auto",
    batch_window_ms: Annotated[
        float, typer.Option(help="Longest wait for concurrent requests to join a batch, in ms")
    ] = 3.0,
    engine: Annotated[str, typer.Option(help="torch, onnx, int8 or auto, as for predict")] = "auto",
    body_timeout: Annotated[
        float, typer.Option(help="Longest wait for a whole upload, in s (slower clients get 408)")
    ] = 30.0,
) -> None:
    """Serve RUN as a web page (GET /) and a JSON API (POST /predict, GET /model, GET /health)."""
    from imgcls.serve import run_server

    run_server(
        run,
        host=host,
        port=port,
        workers=workers,
        max_upload_mb=max_upload_mb,
        max_batch=max_batch,
        batch_window_ms=batch_window_ms,
        engine=engine,
        body_timeout_s=body_timeout,
    )
