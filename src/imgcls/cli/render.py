"""How the commands show results: rich tables on stdout, messages on stderr, JSON untouched."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from imgcls.files import shown_path

console = Console()
err_console = Console(stderr=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")


def print_written(written) -> None:
    """PNG paths on stdout (one per line, for scripts); unusable inputs on stderr."""
    for path in written.paths:
        sys.stdout.write(f"{path}\n")
    for error in written.errors:
        err_console.print(f"[red]skipped {error}[/red]", highlight=False, soft_wrap=True)


def print_wrote(path: Path | None) -> None:
    if path:
        console.print(f"Wrote {escape(str(path))}", highlight=False, soft_wrap=True)


def print_run_result(run) -> None:
    """What `imgcls train` says at the end: the kept model's metrics and where everything is."""
    metrics = run.metrics
    console.print(
        f"[bold green]Finished.[/bold green] {metrics['split']} accuracy "
        f"[bold]{metrics['accuracy']:.2%}[/bold], loss {metrics['loss']:.4f} on {metrics['n_images']} images"
    )
    kept = run.kept
    if kept.get("stage"):
        console.print(
            f"Kept: stage {kept['stage']}, epoch {kept.get('epoch')}, {kept.get('image_size')} px "
            f"(best {kept.get('monitor')})",
            highlight=False,
        )
    console.print(
        f"Run folder: [bold]{escape(str(run))}[/bold]  (model.safetensors, history.csv, curves.png, metrics.json)",
        soft_wrap=True,
    )
    if run.report_path.is_file():
        console.print(f"Report: [bold]{escape(str(run.report_path))}[/bold]", soft_wrap=True)
    print_metrics(metrics, with_headline=False)
    console.print(f"Next: imgcls evaluate {run}   |   imgcls predict {run} PHOTO.jpg", soft_wrap=True)


def print_metrics(metrics: dict, with_headline: bool = True) -> None:
    if with_headline:
        console.print(
            f"[bold]{metrics['n_images']}[/bold] images ({metrics.get('data', '')}): accuracy "
            f"[bold]{metrics['accuracy']:.2%}[/bold], loss {metrics['loss']:.4f}"
            + (f", ROC AUC {metrics['roc_auc']:.4f}" if "roc_auc" in metrics else "")
            + (" (with mirror images: flip TTA)" if metrics.get("flip_tta") else "")
            + (f" (centre crops {metrics['eval_crops']})" if metrics.get("eval_crops", [1.0]) != [1.0] else "")
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


def print_mistakes(summary: dict, found: list, predicted) -> None:
    console.print(
        f"[bold]{summary['n_wrong']}[/bold] of {summary['n_images']} images wrong ({escape(predicted.described)})",
        soft_wrap=True,
    )
    table = Table("#", Column("file", overflow="fold"), "true", "predicted", "probability", "loss")
    for rank, m in enumerate(found, 1):
        table.add_row(
            str(rank),
            Text(shown_path(m.path, predicted.root)),
            Text(m.true_label),
            Text(m.predicted_label),
            f"{m.probability:.1%}",
            f"{m.loss:.3f}",
        )
    console.print(table)


def print_suspects(found, shown: list) -> None:
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
            str(rank), Text(shown_path(s.path, found.root)), s.split, Text(s.given_label), predicted, f"{s.score:.3f}"
        )
    console.print(table)


def print_predictions(predictions: list, classes: list[str], output_format: str, top_k: int) -> None:
    """`imgcls predict` results as a table, CSV or JSON on stdout."""
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
        writer.writerow(["file", "label", "probability", *classes, "error"])
        for p in predictions:
            probabilities = (_fmt(p.probabilities.get(c)) for c in classes)
            writer.writerow([p.source, p.label or "", _fmt(p.probability), *probabilities, p.error or ""])
        sys.stdout.write(buffer.getvalue())
    else:
        k = max(1, min(top_k, len(classes)))
        table = Table("file", *(f"top {i + 1}" for i in range(k)), "error")
        for p in predictions:
            tops = [f"{label} {prob:.1%}" for label, prob in p.top_k(k)] or [""] * k
            table.add_row(p.source, *tops, f"[red]{p.error}[/red]" if p.error else "")
        console.print(table)


def print_stream_summary(summary) -> None:
    """What `imgcls predict --output` says at the end (on stderr: stdout may be piped)."""
    kept = f"; {summary.already_done:,} were there already" if summary.already_done else ""
    err_console.print(
        f"{summary.predicted:,} files predicted into {escape(summary.output)} in {summary.seconds:g} s "
        f"({summary.images_per_s:,.1f} images/s){kept}",
        highlight=False,
        soft_wrap=True,
    )


def print_recipes(recipes: list, default: str) -> None:
    for r in recipes:
        marker = " [green](default)[/green]" if r.name == default else ""
        augment = "augmented" if r.augment.enabled or r.augment.mixing else "no augmentation"
        training = f"batch {r.batch_size}, {r.epochs} epochs, {r.optimizer} lr {r.lr:g} ({r.schedule})"
        if r.model == "transfer" and r.head_fit == "lbfgs-cv":
            training = "head: L2 logistic regression, strength by 5-fold cross-validation"
        console.print(
            f"[bold]{r.name}[/bold]{marker}: {r.model}, {r.image_size} px, {training}, {augment}", soft_wrap=True
        )
        measured = f"\n    [dim]command: {escape(r.command)}[/dim]" if r.command else ""
        console.print(f"    {r.description}\n    [dim]measured: {escape(r.expected)}[/dim]{measured}", soft_wrap=True)


def print_tune_result(result) -> None:
    """What `imgcls tune` says at the end: every trial (the settings that differ from the recipe), the
    best run and what to do with it."""
    from imgcls.tune import shown  # here: the other commands' output imports no Optuna

    best = result.best
    with_test = any(t.test_accuracy is not None for t in result.trials)
    columns = ["trial", "state", Column("settings changed", overflow="fold"), "val acc", "val loss", "seconds"]
    table = Table(*columns, *(["test acc"] if with_test else []), title=f"{result.recipe}: {len(result.trials)} trials")
    for t in result.trials:
        changed = shown(t.changed)
        seconds = f"{t.seconds:.1f}" if t.state != "skipped-for-time" else f"~{t.estimated_seconds:.0f}"
        changed = changed or ("(the recipe)" if t.number == 0 else "")
        row = [str(t.number), t.state, escape(changed), _percent(t.val_accuracy), _fmt4(t.val_loss), seconds]
        style = "bold green" if best is not None and t.number == best.number else None
        table.add_row(*row, *([_percent(t.test_accuracy)] if with_test else []), style=style)
    console.print(table)
    console.print(
        f"{result.seconds:.0f} s of {result.budget:.0f} s; stopped: {result.stopped}. "
        f"Trials: {escape(str(result.path / 'trials.jsonl'))}, best: {escape(str(result.path / 'study.json'))}",
        highlight=False,
        soft_wrap=True,
    )
    if best is None:
        return
    test = f"; test accuracy {best.test_accuracy:.2%}" if best.test_accuracy is not None else ""
    console.print(
        f"[bold green]Best:[/bold green] trial {best.number}, val accuracy [bold]{best.val_accuracy:.2%}[/bold] "
        f"(chosen on val, so optimistic){test}",
        highlight=False,
    )
    console.print(f"Best run: [bold]{escape(best.run)}[/bold]", soft_wrap=True)
    console.print(f"Next: imgcls evaluate {best.run}   |   imgcls predict {best.run} PHOTO.jpg", soft_wrap=True)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _fmt4(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"
