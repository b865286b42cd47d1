"""Commands that look into a trained run: `evaluate`, `mistakes`, `report`, `explain`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli.app import (
    DataRootOption,
    FiguresOut,
    ImagePathsArg,
    JsonFlag,
    LabelFromOption,
    LabelPatternOption,
    LabelsCsvOption,
    RunArg,
    app,
    label_options,
)
from imgcls.cli.render import print_json, print_metrics, print_mistakes, print_written, print_wrote

OtherData = Annotated[str | None, typer.Argument(help="Other data (default: the run's test, else val split)")]


@app.command()
def evaluate(
    run: RunArg,
    data: OtherData = None,
    as_json: JsonFlag = False,
    data_dir: DataRootOption = None,
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
    metrics = evaluate_run(run, data, flip_tta=flip_tta, labels=label_options(label_from, label_pattern, labels))
    if as_json:
        print_json(metrics)
        return
    print_metrics(metrics)


@app.command()
def mistakes(
    run: RunArg,
    data: OtherData = None,
    top: Annotated[int, typer.Option(help="How many to list (0 = all); the PNG shows up to 20")] = 16,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: RUN/mistakes.png)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The most confident wrong predictions (highest loss first): a table and a grid PNG, or --json."""
    from imgcls.evaluation import mistakes_summary, predict_run, top_mistakes
    from imgcls.run import Run
    from imgcls.visual.audit import mistakes_figure

    predicted = predict_run(run, data, cached_features=True)
    found = top_mistakes(predicted, top or None)
    png = mistakes_figure(predicted, found[:20], out or Run.open(run).figure("mistakes")) if found else None
    summary = mistakes_summary(predicted, found, png)
    if as_json:
        print_json(summary)
        return
    print_mistakes(summary, found, predicted)
    print_wrote(png)


@app.command()
def report(
    run: RunArg,
    suspects: Annotated[
        bool | None, typer.Option("--suspects/--no-suspects", help="Likely mislabelled images (default: when cheap)")
    ] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Duplicates and leakage (reads every file)")] = True,
) -> None:
    """Write RUN/report.html: metrics, curves, confusion, ROC, mistakes, Grad-CAM, suspects, data, config."""
    import sys

    from imgcls.report import write_report

    sys.stdout.write(f"{write_report(run, suspects, check)}\n")


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
    print_written(written)
    if written.errors:
        raise typer.Exit(1)
