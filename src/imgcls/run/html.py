"""HTML for Jupyter's `_repr_html_`: small cards of fields and tables, every value escaped.

In the run layer, the lowest one that renders something: the Run's card is here, and
`predict.Prediction` and the check and evaluation results of `visual.notebook` build theirs from
the same pieces, so that they look alike. Anything that is not `Html` is escaped with `html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from imgcls.errors import ImgclsError
from imgcls.files import display_path

if TYPE_CHECKING:
    from imgcls.run.folder import Run

CARD_STYLE = "border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;margin:4px 0;max-width:60em"
TABLE_STYLE = "border-collapse:collapse;margin:2px 0"
CELL_STYLE = "padding:1px 10px 1px 0;text-align:left;vertical-align:top"
SHOWN = 10  # items of a long list (files, findings) before "and N more"


class Html(str):
    """Markup built here, already escaped: `text` keeps it as it is and escapes everything else."""


def text(value: Any) -> Html:
    """`value` as HTML: escaped, unless it is `Html` already."""
    return (
        value
        if isinstance(value, Html)
        else Html(html.escape(display_path(value) if isinstance(value, Path) else str(value)))
    )


def join(values: Iterable[Any], separator: str = ", ") -> Html:
    return Html(html.escape(separator).join(text(value) for value in values))


def card(title: Any, body: Html, kind: str) -> Html:
    """A framed box with a bold title: how every imgcls result looks in a notebook."""
    head = f'<div style="font-weight:600;margin-bottom:4px">{text(title)}</div>'
    return Html(f'<div class="imgcls-{kind}" style="{CARD_STYLE}">{head}{body}</div>')


def table(rows: Iterable[Sequence[Any]], header: Sequence[Any] | None = None, row_headers: bool = False) -> Html:
    """Rows of cells; `row_headers`: the first cell of each row names it."""

    def row(cells: Sequence[Any], first_tag: str, tag: str) -> str:
        tagged = ((first_tag if index == 0 else tag, cell) for index, cell in enumerate(cells))
        return "<tr>" + "".join(f'<{t} style="{CELL_STYLE}">{text(c)}</{t}>' for t, c in tagged) + "</tr>"

    head = row(header, "th", "th") if header else ""
    body = "".join(row(cells, "th" if row_headers else "td", "td") for cells in rows)
    return Html(f'<table style="{TABLE_STYLE}">{head}{body}</table>')


def fields(pairs: Iterable[tuple[str, Any]]) -> Html:
    """A card's body: one row per (name, value); `None` values are left out."""
    return table([(name, value) for name, value in pairs if value is not None], row_headers=True)


def bullets(values: Sequence[Any], limit: int = SHOWN, colour: str | None = None) -> Html | None:
    """A list of at most `limit` items, then how many more; None when empty."""
    if not values:
        return None
    style = "margin:0;padding-left:1.2em" + (f";color:{colour}" if colour else "")
    items = "".join(f"<li>{text(value)}</li>" for value in values[:limit])
    more = f"<li>… and {len(values) - limit:,} more</li>" if len(values) > limit else ""
    return Html(f'<ul style="{style}">{items}{more}</ul>')


def link(path: Path | str, label: Any = None) -> Html:
    """A link relative to the kernel's working directory (the notebook's folder, which Jupyter serves)
    when the file lies under it; else the path as code, since browsers do not open file:// links."""
    path = Path(path)
    shown = text(label if label is not None else path)
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return Html(f"<code>{text(path)}</code>" if label is None else f"{shown} (<code>{text(path)}</code>)")
    return Html(f'<a href="{html.escape(quote(relative.as_posix()))}" target="_blank">{shown}</a>')


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def bar(fraction: float, width_em: float = 8) -> Html:
    """A horizontal bar `fraction` (0..1) of `width_em` long: probabilities at a glance."""
    filled = max(0.0, min(1.0, float(fraction))) * width_em
    return Html(
        f'<div style="width:{width_em}em;background:#eaeef2;height:0.7em">'
        f'<div style="width:{filled:.2f}em;background:#0969da;height:0.7em"></div></div>'
    )


# --------------------------------------------------------------------------- the Run's card


def run_card(run: Run) -> Html:
    """Name, recipe, classes, whether it finished, the epoch kept, its metrics, the data and the files."""
    try:
        rows = [
            ("folder", link(run.path)),
            ("recipe", _recipe(run.config.get("recipe"))),
            ("classes", join(_classes(run))),
            ("status", _status(run)),
            ("best epoch", _best_epoch(run)),
            ("metrics", _metrics(run.metrics)),
            ("data", _data(run.config.get("data") or {})),
            ("files", _files(run)),
        ]
    except ImgclsError as error:  # a damaged file: the card says so instead of failing to show
        rows = [("folder", link(run.path)), ("error", str(error))]
    return card(f"Run {run.name}", fields(rows), "run")


def _recipe(recipe: dict | None) -> str | None:
    if not recipe:
        return None
    name, model = recipe.get("name"), recipe.get("model")
    backbone = (recipe.get("model_args") or {}).get("backbone")
    network = ", ".join(str(part) for part in (model if model != name else None, backbone) if part)
    shown = f"{name} ({network})" if network else str(name)
    shown += f": {recipe.get('image_size')} px, {recipe.get('epochs')} epochs"
    if recipe.get("model") == "transfer" and recipe.get("fine_tune"):
        shown += f", then {recipe.get('fine_tune_epochs')} fine-tuning at {recipe.get('fine_tune_image_size')} px"
    return shown


def _classes(run: Run) -> list[str]:
    classes = (run.config.get("data") or {}).get("classes")
    if classes:
        return list(classes)
    return run.spec.classes if run.weights_path.is_file() else []


def _status(run: Run) -> str:
    if run.is_finished:
        return "finished"
    if run.has_checkpoints():
        return "not finished: training, or stopped (imgcls.train(resume=run) continues it)"
    return "not finished: no epoch saved yet"


def _best_epoch(run: Run) -> str | None:
    """The stage and epoch of the model kept, with its score on the monitored metric."""
    kept = run.kept
    if not kept:
        return None
    stage, epoch, monitor = kept.get("stage", "train"), kept.get("epoch"), kept.get("monitor")
    rows = [row for row in run.history if row.get("stage", "train") == stage]
    score = next((row.get(monitor) for row in rows if row.get("epoch") == epoch), None)
    shown = f"epoch {epoch} of {len(rows)}" if stage == "train" else f"{stage} epoch {epoch} of {len(rows)}"
    shown += f": {monitor} {score:.4f}" if isinstance(score, float) else ""
    return shown + f" (the model kept, at {kept.get('image_size')} px)"


def _metrics(metrics: dict) -> str:
    if not metrics:
        return "none yet"
    shown = [f"accuracy {percent(metrics.get('accuracy'))}"]
    shown += [
        f"{name} {metrics[key]:.4f}" for key, name in (("loss", "loss"), ("roc_auc", "ROC AUC")) if key in metrics
    ]
    if "macro_f1" in metrics:
        shown.append(f"macro F1 {metrics['macro_f1']:.3f}")
    count = metrics.get("n_images")
    where = f" on {count:,} {metrics.get('split', 'held-out')} images" if isinstance(count, int) else ""
    return ", ".join(shown) + where


def _data(data: dict) -> Html | None:
    """The data folder and the number of photos of each class in each split."""
    counts, classes = data.get("counts") or {}, data.get("classes") or []
    if not counts:
        return None
    rows = [count_row(split, per_class, classes) for split, per_class in counts.items()]
    root = data.get("root")
    where = link(root) if root else Html("")
    return Html(where + table(rows, ("split", *classes, "total"), row_headers=True))


def count_row(split: str, per_class: dict[str, int], classes: Sequence[str]) -> tuple[str, ...]:
    """A split's images per class, then in all, as a table row (the header: split, *classes, total)."""
    counts = [per_class.get(name, 0) for name in classes]
    return (split, *(f"{n:,}" for n in (*counts, sum(per_class.values()))))


def _files(run: Run) -> Html | None:
    """Links to what a reader opens first: the report, the figures, the history, the metrics, the model."""
    named = [
        ("report", run.report_path),
        ("curves", run.curves_path),
        ("confusion matrix", run.confusion_path),
        ("history", run.history_path),
        ("metrics", run.metrics_path),
        ("ONNX model", run.onnx_path),
        ("mistakes", run.figure("mistakes")),
    ]
    present = [link(path, label) for label, path in named if path.is_file()]
    skipped = len(run.skipped)
    if skipped:
        present.append(Html(f"{skipped:,} unreadable file(s) skipped"))
    return join(present, " · ") if present else None
