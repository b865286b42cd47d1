"""The `imgcls` command: typer commands that call the layers below and hold no logic of their own."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from imgcls.errors import ImgclsError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, check and use image classifiers.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
app.add_typer(data_app, name="data")
show_app = typer.Typer(no_args_is_help=True, help="Draw pictures: samples, augmentation, feature maps (PNG files).")
app.add_typer(show_app, name="show")
console = Console()
err_console = Console(stderr=True)

DataArg = Annotated[str, typer.Argument(help="Folder of class subfolders, train/val layout, or a built-in name")]
RunArg = Annotated[Path, typer.Argument(help="A run folder, e.g. runs/scratch")]
DataRootOption = typer.Option(
    "--data-root",
    "--data",
    help="Local copy of a built-in dataset (MNIST/raw/*-ubyte.gz, cifar-10-batches-py/, cats_and_dogs_filtered/); "
    "nothing is downloaded then",
)
# where labels come from when DATA is not a tree of class folders (see imgcls.data.labels)
LabelFromOption = Annotated[
    str, typer.Option(help="folder: class subfolders | name: file names such as cat.0.jpg or cat_0.jpg")
]
LabelPatternOption = Annotated[
    str | None, typer.Option(help="Regex with one group, the label, searched in file names (implies name)")
]
LabelsCsvOption = Annotated[
    Path | None, typer.Option("--labels", help="CSV with columns path,label[,split]; paths relative to DATA or the CSV")
]


def _label_options(label_from: str, label_pattern: str | None, labels: Path | None):
    """LabelOptions for the label flags, or None for class folders (the default)."""
    from imgcls.data.labels import LabelOptions

    options = LabelOptions(label_from, label_pattern, labels)
    return None if options.is_default else options


@app.command()
def train(
    data: Annotated[
        str | None,
        typer.Argument(help="Folder of class subfolders, train/val layout, flat labelled folder, or a built-in name"),
    ] = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe name (imgcls recipes)")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs")] = None,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels")] = None,
    channels: Annotated[int | None, typer.Option(help="Input channels: 1 = grayscale, 3 = RGB")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate")] = None,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="Recipe augmentation on/off")] = None,
    aug: Annotated[
        list[str] | None, typer.Option(help="Augmentation KEY=VALUE, Keras names (rotation_range=40)")
    ] = None,
    val_split: Annotated[float | None, typer.Option(help="Share held out when DATA has no val/ folder")] = None,
    early_stopping: Annotated[int | None, typer.Option(help="Patience in epochs on --monitor (0 = off)")] = None,
    monitor: Annotated[str | None, typer.Option(help="Epoch kept: val_loss (lowest) or val_accuracy (highest)")] = None,
    class_weights: Annotated[str | None, typer.Option(help="'auto': weigh classes by inverse frequency")] = None,
    flip_tta: Annotated[
        bool | None, typer.Option("--flip-tta/--no-flip-tta", help="Average each image's logits with its mirror's")
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Transfer recipes: efficientnet_lite0, timm/NAME, torchvision/NAME")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Transfer recipes: 'imagenet' or a .pth/.pt/.safetensors/.h5 file")
    ] = None,
    views: Annotated[
        int | None, typer.Option(help="Cached feature views per training image (1 plain + augmented)")
    ] = None,
    fine_tune: Annotated[
        bool | None, typer.Option("--fine-tune/--no-fine-tune", help="Stage 2: unfreeze part of the backbone")
    ] = None,
    unfreeze_from: Annotated[
        str | None, typer.Option(help="'last:N' blocks, a layer name (e.g. mixed6: unfreeze what follows), 'all'")
    ] = None,
    fine_tune_epochs: Annotated[int | None, typer.Option(help="Epochs of stage 2")] = None,
    fine_tune_lr: Annotated[float | None, typer.Option(help="Learning rate of stage 2")] = None,
    fine_tune_image_size: Annotated[
        int | None, typer.Option(help="Input size of stage 2 and of the model it keeps (progressive resizing)")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder that holds run folders")] = Path("runs"),
    name: Annotated[str | None, typer.Option(help="Run name (default: the recipe's); never overwritten")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (split, init, order, augmentation)")] = 0,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run folder")] = None,
    devices: Annotated[str, typer.Option(help="Lightning devices: 1, 2, 'auto', '0,1'")] = "1",
    strategy: Annotated[str, typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn, fsdp")] = "auto",
    num_nodes: Annotated[int, typer.Option(help="Machines for multi-node training")] = 1,
    accelerator: Annotated[str, typer.Option(help="cpu, gpu, mps or auto")] = "auto",
    data_dir: Annotated[Path | None, DataRootOption] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar")] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write RUN/report.html at the end")] = True,
) -> None:
    """Train a recipe on DATA; writes a run folder with the model, history, curves and metrics."""
    from imgcls.augment import Augment
    from imgcls.recipes import DEFAULT_RECIPE, SEED_AUGMENT, get_recipe, with_backbone
    from imgcls.training.fit import TrainOptions, _is_rank_zero
    from imgcls.training.fit import resume as resume_run
    from imgcls.training.fit import train as fit

    if resume is not None:
        run = resume_run(resume, progress=progress)
    else:
        chosen = get_recipe(recipe or DEFAULT_RECIPE)
        augmentation = chosen.augment
        if augment is False:
            augmentation = Augment()
        elif augment and not augmentation.enabled:
            augmentation = SEED_AUGMENT
        if aug:
            augmentation = Augment.from_dict({**augmentation.as_dict(), **_parse_pairs(aug)})
        if channels not in (None, 1, 3):
            raise ImgclsError(f"--channels {channels}: use 1 (grayscale) or 3 (RGB)")
        chosen = chosen.override(
            epochs=epochs,
            image_size=image_size,
            channels=channels,
            batch_size=batch_size,
            lr=lr,
            val_split=val_split,
            early_stopping=early_stopping,
            monitor=monitor,
            flip_tta=flip_tta,
            augment=augmentation,
            weights=weights,
            views=views,
            fine_tune=fine_tune,
            unfreeze=unfreeze_from,
            fine_tune_epochs=fine_tune_epochs,
            fine_tune_lr=fine_tune_lr,
            fine_tune_image_size=fine_tune_image_size,
        )
        if backbone:
            if chosen.model != "transfer":
                raise ImgclsError(f"--backbone needs a transfer recipe; {chosen.name} trains {chosen.model}")
            chosen = with_backbone(chosen, backbone).override(image_size=image_size)
        options = TrainOptions(
            out=out,
            name=name,
            seed=seed,
            devices=_devices(devices),
            strategy=strategy,
            num_nodes=num_nodes,
            accelerator=accelerator,
            class_weights=class_weights,
            data_dir=data_dir,
            labels=_label_options(label_from, label_pattern, labels),
            progress=progress,
            report=report,
        )
        run = fit(data if data or labels else "cats-vs-dogs", chosen, options)
    if _is_rank_zero():  # DDP worker processes run this command too: report once
        _print_run_result(run)


@app.command()
def evaluate(
    run: RunArg,
    data: Annotated[str | None, typer.Argument(help="Other data (default: the run's test, else val split)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
    data_dir: Annotated[Path | None, DataRootOption] = None,
    flip_tta: Annotated[
        bool | None,
        typer.Option("--flip-tta/--no-flip-tta", help="Average with mirror images or not (default: as trained)"),
    ] = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
) -> None:
    """Accuracy, loss, per-class precision/recall/F1, confusion matrix, ROC AUC (two classes)."""
    from imgcls.evaluation import evaluate_run

    if data is not None and data_dir is not None:  # a built-in name read from a local copy
        from imgcls.data.builtin import resolve_builtin

        data = str(resolve_builtin(data, data_dir))
    metrics = evaluate_run(run, data, flip_tta=flip_tta, labels=_label_options(label_from, label_pattern, labels))
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return
    _print_metrics(metrics)


@app.command()
def mistakes(
    run: RunArg,
    data: Annotated[str | None, typer.Argument(help="Other data (default: the run's test, else val split)")] = None,
    top: Annotated[int, typer.Option(help="How many to list (0 = all); the PNG shows up to 20")] = 16,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: RUN/mistakes.png)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
) -> None:
    """The most confident wrong predictions (highest loss first): a table and a grid PNG, or --json."""
    from imgcls.evaluation import mistakes_summary, predict_run, top_mistakes
    from imgcls.visual.audit import mistakes_figure

    predicted = predict_run(run, data, cached_features=True)
    found = top_mistakes(predicted, top or None)
    png = mistakes_figure(predicted, found[:20], out or run / "mistakes.png") if found else None
    summary = mistakes_summary(predicted, found, png)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    console.print(
        f"[bold]{summary['n_wrong']}[/bold] of {summary['n_images']} images wrong ({escape(predicted.described)})",
        soft_wrap=True,
    )
    table = Table("#", Column("file", overflow="fold"), "true", "predicted", "probability", "loss")
    for rank, m in enumerate(found, 1):
        table.add_row(
            str(rank),
            Text(_shown_path(m.path, predicted.root)),
            Text(m.true_label),
            Text(m.predicted_label),
            f"{m.probability:.1%}",
            f"{m.loss:.3f}",
        )
    console.print(table)
    if png:
        console.print(f"Wrote {escape(str(png))}", highlight=False, soft_wrap=True)


@app.command()
def report(
    run: RunArg,
    suspects: Annotated[
        bool | None, typer.Option("--suspects/--no-suspects", help="Likely mislabelled images (default: when cheap)")
    ] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Duplicates and leakage (reads every file)")] = True,
) -> None:
    """Write RUN/report.html: metrics, curves, confusion, ROC, mistakes, Grad-CAM, suspects, data, config."""
    from imgcls.visual.report import write_report

    sys.stdout.write(f"{write_report(run, suspects, check)}\n")


@app.command()
def predict(
    run: RunArg,
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns")],
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    top_k: Annotated[int, typer.Option(help="Classes shown per image")] = 1,
    batch_size: Annotated[int, typer.Option(help="Images per batch (16 is fastest on a 2-core CPU)")] = 16,
    engine: Annotated[
        str, typer.Option(help="torch, onnx (RUN/model.onnx, see imgcls export) or auto (onnx when up to date)")
    ] = "auto",
) -> None:
    """Predict classes for images; unreadable files get an error row and a non-zero exit code."""
    from imgcls.inference import Classifier, expand_paths

    if output_format not in ("table", "csv", "json"):
        raise ImgclsError(f"--format {output_format!r}: use table, csv or json")
    classifier = Classifier.load(run, engine=engine)
    predictions = classifier.predict(expand_paths(paths), batch_size=batch_size)
    k = max(1, min(top_k, len(classifier.classes)))
    if output_format == "json":
        rows = [
            {
                "file": p.source,
                "label": p.label,
                "probability": p.probability,
                "probabilities": p.probabilities,
                "error": p.error,
            }
            for p in predictions
        ]
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", "label", "probability", *classifier.classes, "error"])
        for p in predictions:
            writer.writerow(
                [
                    p.source,
                    p.label or "",
                    _fmt(p.probability),
                    *(_fmt(p.probabilities.get(c)) for c in classifier.classes),
                    p.error or "",
                ]
            )
        sys.stdout.write(buffer.getvalue())
    else:
        table = Table("file", *(f"top {i + 1}" for i in range(k)), "error")
        for p in predictions:
            tops = [f"{label} {prob:.1%}" for label, prob in p.top_k(k)] or [""] * k
            table.add_row(p.source, *tops, f"[red]{p.error}[/red]" if p.error else "")
        console.print(table)
    failed = sum(p.error is not None for p in predictions)
    if failed:
        err_console.print(f"[red]{failed} of {len(predictions)} file(s) could not be read[/red]")
        raise typer.Exit(1)


@app.command()
def export(
    run: RunArg,
    export_format: Annotated[str, typer.Option("--format", help="Export format (supported: onnx)")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="File to write (default: RUN/model.onnx)")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version")] = 17,
) -> None:
    """Export the model: ONNX takes float32 NCHW pixels 0..255 and returns class probabilities;
    OUT.json next to it describes the preprocessing. Prints the path written."""
    from imgcls.export import export_model, sidecar_path

    path = export_model(run, export_format, out, opset)
    sys.stdout.write(f"{path}\n")
    err_console.print(f"[dim]preprocessing and classes: {sidecar_path(path)}[/dim]", highlight=False, soft_wrap=True)


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
    engine: Annotated[str, typer.Option(help="torch, onnx or auto, as for predict")] = "auto",
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
    )


@app.command()
def recipes() -> None:
    """List the named recipes with their settings and expected results."""
    from imgcls.recipes import DEFAULT_RECIPE, list_recipes

    for r in list_recipes():
        default = " [green](default)[/green]" if r.name == DEFAULT_RECIPE else ""
        augment = "augmented" if r.augment.enabled else "no augmentation"
        console.print(
            f"[bold]{r.name}[/bold]{default}: {r.model}, {r.image_size} px, batch {r.batch_size}, {r.epochs} epochs, "
            f"{r.optimizer} lr {r.lr:g} ({r.schedule}), {augment}",
            soft_wrap=True,
        )
        console.print(f"    {r.description}\n    [dim]expected: {r.expected}[/dim]", soft_wrap=True)


@app.command()
def models(pattern: Annotated[str, typer.Argument(help="Glob pattern, e.g. 'seed-*'")] = "*") -> None:
    """List the registered model architectures."""
    from imgcls.models.registry import get_model_entry, list_models

    table = Table("model", "default size", "description")
    for name in list_models(pattern):
        entry = get_model_entry(name)
        table.add_row(name, str(entry.default_size), entry.description)
    console.print(table)


@app.command()
def summary(
    name: Annotated[str, typer.Argument(help="A recipe or model name")],
    classes: Annotated[int, typer.Option(help="Number of classes")] = 2,
    image_size: Annotated[int | None, typer.Option(help="Square input size in pixels")] = None,
) -> None:
    """A Keras-like table: layer, output shape, parameters."""
    from imgcls.summary import model_summary

    console.print(model_summary(name, classes, image_size), highlight=False, soft_wrap=True)


@data_app.command("check")
def data_check(
    data: Annotated[str | None, typer.Argument(help="Folder, built-in name (or none with --labels FILE.csv)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
    val_split: Annotated[float, typer.Option(help="Share held out when DATA has no val/ folder")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of that split")] = 0,
    data_dir: Annotated[Path | None, DataRootOption] = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
) -> None:
    """Counts, formats, sizes, unreadable files, duplicates, leakage across splits, imbalance; with
    file-name or CSV labels, also the classes found and the files that got no label."""
    from imgcls.data.check import check_dataset, print_check

    label_options = _label_options(label_from, label_pattern, labels)
    report = check_dataset(data, val_split=val_split, seed=seed, data_dir=data_dir, labels=label_options)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        print_check(report, console)
    if not report["ok"]:
        raise typer.Exit(1)


@data_app.command("split")
def data_split(
    src: Annotated[str, typer.Argument(help="Photos: class folders, a split tree, a flat labelled folder")],
    dest: Annotated[Path, typer.Argument(help="New (or empty) folder for train/, val/, test/")],
    train: Annotated[int | None, typer.Option(help="Train images per class (the rest is left out)")] = None,
    val: Annotated[int | None, typer.Option(help="Validation images per class")] = None,
    test: Annotated[int | None, typer.Option(help="Test images per class")] = None,
    fractions: Annotated[
        str | None, typer.Option(help="Shares of each class: train,val[,test] (default 0.7,0.15,0.15)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle")] = 0,
    link: Annotated[
        bool, typer.Option("--link/--copy", help="Hard links (symlinks across file systems) or copies")
    ] = True,
    near_threshold: Annotated[
        int | None, typer.Option(help="dHash bits (of 256) within which images are near-duplicates (default 24)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
    data_dir: Annotated[Path | None, DataRootOption] = None,
) -> None:
    """Stratified, seeded train/val/test class folders; duplicates and near-duplicates stay in one split."""
    from imgcls.data.split import parse_fractions, print_split, split_dataset

    counts = {name: n for name, n in (("train", train), ("val", val), ("test", test)) if n is not None}
    plan = split_dataset(
        src,
        dest,
        counts=counts or None,
        fractions=parse_fractions(fractions),
        seed=seed,
        link=link,
        labels=_label_options(label_from, label_pattern, labels),
        near_threshold=near_threshold,
        data_dir=data_dir,
    )
    if as_json:
        sys.stdout.write(json.dumps(plan.summary()) + "\n")
    else:
        print_split(plan.summary(), console)


@data_app.command("suspects")
def data_suspects(
    run: RunArg,
    data: Annotated[str | None, typer.Argument(help="Images to audit (default: all images of the run)")] = None,
    folds: Annotated[int, typer.Option(help="Folds: each image is judged by a head fitted on the others")] = 5,
    top: Annotated[int, typer.Option(help="How many to list (0 = all); the PNG shows up to 20")] = 20,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: RUN/suspects.png)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the folds")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout")] = False,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
) -> None:
    """Likely mislabelled images: those whose label the model disagrees with most, judged out of fold."""
    from imgcls.suspects import find_suspects
    from imgcls.visual.audit import suspects_figure

    label_options = _label_options(label_from, label_pattern, labels)
    found = find_suspects(run, data, folds=folds, seed=seed, labels=label_options)
    shown = found.suspects[: top or None]
    png = suspects_figure(found, shown[:20], out or run / "suspects.png") if shown else None
    if as_json:
        sys.stdout.write(json.dumps({**found.as_dict(top or None), "png": png and str(png)}) + "\n")
        return
    console.print(
        f"{escape(found.data)}: {found.folds} folds on features of {escape(found.features)}; "
        f"[bold]{found.disagreements}[/bold] label(s) disagree with the out-of-fold prediction",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("#", Column("file", overflow="fold"), "split", "given label", "model's label", "score")
    for rank, s in enumerate(shown, 1):
        style = "red" if s.predicted_label != s.given_label else ""
        predicted = Text(f"{s.predicted_label} {s.predicted_probability:.1%}", style=style)
        table.add_row(
            str(rank), Text(_shown_path(s.path, found.root)), s.split, Text(s.given_label), predicted, f"{s.score:.3f}"
        )
    console.print(table)
    if png:
        console.print(f"Wrote {escape(str(png))}", highlight=False, soft_wrap=True)


ImagePathsArg = Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns")]
FiguresOut = Annotated[Path | None, typer.Option(help="Folder for the PNG files (default: inside the run folder)")]


@show_app.command("samples")
def show_samples(
    data: Annotated[str | None, typer.Argument(help="Folder, built-in name (or none with --labels FILE.csv)")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG file")] = Path("figures"),
    count: Annotated[int, typer.Option(min=1, help="Photos in the grid")] = 15,
    split: Annotated[str, typer.Option(help="train, val or test")] = "train",
    seed: Annotated[int, typer.Option(help="Random pick (and val split) seed")] = 0,
    data_dir: Annotated[Path | None, DataRootOption] = None,
    label_from: LabelFromOption = "folder",
    label_pattern: LabelPatternOption = None,
    labels: LabelsCsvOption = None,
) -> None:
    """A grid of photos from DATA with their class names; prints the PNG path."""
    from imgcls.visual.show import show_samples as draw

    label_options = _label_options(label_from, label_pattern, labels)
    _print_written(draw(data, out, count, split, seed, data_dir, label_options))


@show_app.command("augment")
def show_augment(
    source: Annotated[str, typer.Argument(help="An image file, or DATA (a seeded random training photo is used)")],
    recipe: Annotated[str | None, typer.Option(help="Use this recipe's augmentation and image size")] = None,
    aug: Annotated[
        list[str] | None, typer.Option(help="Augmentation KEY=VALUE, Keras names (rotation_range=40)")
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Augmented copies")] = 9,
    seed: Annotated[int, typer.Option(help="Random seed of the augmentations")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the PNG files")] = Path("figures"),
    data_dir: Annotated[Path | None, DataRootOption] = None,
) -> None:
    """The same photo augmented COUNT times (recipe or --aug; default the seeds' ImageDataGenerator),
    plus seed 001's tf.image flips, crop, brightness and hue; prints the PNG paths."""
    from imgcls.visual.show import show_augment as draw

    _print_written(draw(source, out, recipe, _parse_pairs(aug or []), count, seed, data_dir))


@show_app.command("activations")
def show_activations(
    run: RunArg,
    image: Annotated[Path, typer.Argument(help="An image file")],
    layers: Annotated[
        list[str] | None, typer.Option(help="Layer names, patterns ('*conv*') or positions; default all conv/pool")
    ] = None,
    max_maps: Annotated[int, typer.Option(min=1, help="Feature maps drawn per layer (the first ones)")] = 64,
    out: FiguresOut = None,
) -> None:
    """Feature maps of every convolution/pooling layer for IMAGE, one PNG per layer; prints the paths."""
    from imgcls.visual.show import show_activations as draw

    _print_written(draw(run, image, out, layers, max_maps))


@app.command()
def explain(
    run: RunArg,
    images: ImagePathsArg,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Explain this class instead of the predicted one")
    ] = None,
    grid: Annotated[bool, typer.Option(help="One grid of overlays instead of one PNG per image")] = False,
    out: FiguresOut = None,
) -> None:
    """Grad-CAM: where in each photo the model found its evidence; prints the PNG paths."""
    from imgcls.inference import expand_paths
    from imgcls.visual.show import explain_images

    written = explain_images(run, expand_paths(images), out, class_name, grid)
    _print_written(written)
    if written.errors:
        raise typer.Exit(1)


def _shown_path(path: Path, root: Path | None) -> str:
    """A path relative to its data folder when it lies inside (short tables), else as it is."""
    from imgcls.data.decode import display_path

    try:
        return display_path(path.relative_to(root)) if root else display_path(path)
    except ValueError:
        return display_path(path)


def _print_written(written) -> None:
    """PNG paths on stdout (one per line, for scripts); unusable inputs on stderr."""
    for path in written.paths:
        sys.stdout.write(f"{path}\n")
    for error in written.errors:
        err_console.print(f"[red]skipped {error}[/red]", highlight=False, soft_wrap=True)


def _print_run_result(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    console.print(
        f"[bold green]Finished.[/bold green] {metrics['split']} accuracy "
        f"[bold]{metrics['accuracy']:.2%}[/bold], "
        f"loss {metrics['loss']:.4f} on {metrics['n_images']} images"
    )
    console.print(
        f"Run folder: [bold]{run}[/bold]  (model.safetensors, history.csv, curves.png, metrics.json)",
        soft_wrap=True,
    )
    if (run / "report.html").is_file():
        console.print(f"Report: [bold]{escape(str(run / 'report.html'))}[/bold]", soft_wrap=True)
    _print_metrics(metrics, with_headline=False)
    console.print(f"Next: imgcls evaluate {run}   |   imgcls predict {run} PHOTO.jpg", soft_wrap=True)


def _print_metrics(metrics: dict, with_headline: bool = True) -> None:
    if with_headline:
        console.print(
            f"[bold]{metrics['n_images']}[/bold] images ({metrics.get('data', '')}): accuracy "
            f"[bold]{metrics['accuracy']:.2%}[/bold], loss {metrics['loss']:.4f}"
            + (f", ROC AUC {metrics['roc_auc']:.4f}" if "roc_auc" in metrics else "")
            + (" (with mirror images: flip TTA)" if metrics.get("flip_tta") else "")
        )
    table = Table("class", "precision", "recall", "F1", "support")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    matrix = Table("true \\ predicted", *metrics["classes"], title="Confusion matrix")
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"], strict=True):
        matrix.add_row(name, *map(str, row))
    console.print(matrix)
    for key in ("confusion_png", "roc_png"):
        if key in metrics:
            console.print(f"Wrote {metrics[key]}")


def _parse_pairs(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ImgclsError(f"--aug {pair!r}: expected KEY=VALUE, e.g. rotation_range=40")
        try:
            values[key.strip()] = json.loads(raw.replace("(", "[").replace(")", "]"))
        except json.JSONDecodeError:
            values[key.strip()] = {"true": True, "false": False}.get(raw.lower(), raw)
    return values


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def main() -> None:
    """Entry point: user-facing errors become one red message and exit code 2, never a traceback."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.getLogger("imgcls").addHandler(handler)
    try:
        app()
    except ImgclsError as error:
        # soft_wrap: no hard line breaks inside paths and commands the user copies from the message
        err_console.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
