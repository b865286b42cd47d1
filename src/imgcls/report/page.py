"""`report.html`: one self-contained page per run that shows what the model learned and where it fails.

Sections: headline numbers, per-class metrics, confusion matrix, ROC, training curves, the most
confident mistakes, Grad-CAM on a few of them, likely mislabelled images (suspects), the data
(counts, skipped files, duplicates, leakage and image quality from `data check`) and config.yaml.

Every picture is embedded as a base64 data URI, so the file opens from disk, can be mailed or
attached to a ticket, and needs no server. Every string that comes from the user's files (class
and file names, paths, config values) goes through Jinja2's autoescaping. A section that cannot be
computed (data folder moved, no Grad-CAM layer...) says why instead of failing the whole report.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jinja2 import Environment

from imgcls.errors import ImgclsError
from imgcls.files import atomic_write_text, display_path
from imgcls.models.classifier import ModelSpec
from imgcls.run import Run

log = logging.getLogger("imgcls")
SHOWN_MISTAKES = 12
SHOWN_SUSPECTS = 12
SUSPECT_ROWS = 25
GRAD_CAM_EXAMPLES = 6
TILE_PIXELS = 256
NEAR_DUPLICATE_LIMIT = 20_000  # images: above it the all-pairs near-duplicate search takes minutes


@dataclass
class Tile:
    """One picture of a gallery: image, caption lines (css class, text), the full path on hover."""

    image: str
    lines: list[tuple[str, str]]
    title: str = ""


@dataclass
class Section:
    """What a section shows, or why it could not be made (`note`)."""

    data: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    seconds: float = 0.0


def write_report(run: Run | Path | str, suspects: bool | None = None, check: bool = True) -> Path:
    """Write RUN/report.html (replacing an earlier report) and return its path.

    `suspects`: None = only when cheap (a transfer run with a frozen backbone: training cached its
    features), True = always, False = never. `check`: run `data check` on the run's data
    (reads every file once: ~13 s for 3,000 photos)."""
    return _write(Run.open(run), suspects, check)


def _write(run: Run, suspects: bool | None, check: bool) -> Path:
    context = {
        "run": run.name,
        "run_path": display_path(run.path.resolve()),
        "generated": datetime.now().strftime("%Y-%m-%d %H:%M"),
        **_overview(run),
    }
    from imgcls.suspects import one_torch_thread

    predicted = _section(lambda: _predictions(run))  # training's own, when it ran in this process
    context["mistakes"] = _section(lambda: _mistakes(predicted.data["predictions"]), after=predicted)
    context["roc"] = _section(lambda: _roc(predicted.data["predictions"]), after=predicted)
    with one_torch_thread():  # batch-1 Grad-CAM and small heads: threads only add waiting
        context["grad_cam"] = _section(lambda: _grad_cam(run, predicted.data["predictions"]), after=predicted)
        context["suspects"] = _section(lambda: _suspects(run, suspects))
    context["check"] = _section(lambda: _check(run) if check else _skip("data check skipped (check=False)"))
    path = run.report_path
    atomic_write_text(path, _template().render(**context))
    timings = {"predictions": predicted.seconds} | {k: v.seconds for k, v in context.items() if isinstance(v, Section)}
    log.info("wrote %s (%s)", path, ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return path


def write_report_safely(run: Run) -> Path | None:
    """The end of training: a failed report is a warning, never a failed training."""
    try:
        return write_report(run)
    except Exception as error:  # the model is saved already; the report can be made later
        log.warning("could not write %s (%s); try: imgcls report %s", run.report_path, error, run)
        return None


# --------------------------------------------------------------------------- sections


def _section(make: Callable[[], dict], after: Section | None = None) -> Section:
    if after is not None and after.note is not None:
        return Section(note=after.note)
    started = time.perf_counter()
    try:
        result = make()
    except _Skipped as skipped:
        return Section(note=str(skipped))
    except Exception as error:  # one broken section must not cost the rest of the report
        log.warning("report: %s", error)
        described = str(error) if isinstance(error, (ImgclsError, OSError)) else f"{type(error).__name__}: {error}"
        return Section(note=f"could not be computed: {described}")
    return Section(data=result, seconds=time.perf_counter() - started)


class _Skipped(Exception):
    pass


def _skip(reason: str) -> dict:
    raise _Skipped(reason)


def _overview(run: Run) -> dict:
    """Headline numbers, per-class table, the run's own figures, data counts and config.yaml."""
    config_text = yaml.safe_dump(run.config, sort_keys=False) if run.config else ""
    metrics = run.metrics
    spec = run.spec
    return {
        "config_text": config_text,
        "recipe": run.config.get("recipe", {}).get("name", ""),
        "architecture": _architecture(spec),
        "data_root": display_path(run.data_root or ""),
        "image_size": spec.image_size,
        "metrics": metrics,
        "kpis": _kpis(metrics),
        "per_class": metrics.get("per_class", {}),
        "figures": {"curves": _file_uri(run.curves_path), "confusion_matrix": _file_uri(run.confusion_path)},
        "counts": _counts(run),
        "skipped": run.skipped,
    }


def _kpis(metrics: dict) -> list[tuple[str, str, str]]:
    if not metrics:
        return []
    split = metrics.get("split", "held-out")
    kpis = [
        ("Accuracy", f"{metrics['accuracy']:.2%}", f"{split} split"),
        ("Loss", f"{metrics['loss']:.4f}", "cross-entropy"),
        ("Macro F1", f"{metrics['macro_f1']:.3f}", "mean over classes"),
    ]
    if "roc_auc" in metrics:
        kpis.append(("ROC AUC", f"{metrics['roc_auc']:.4f}", f"{metrics['classes'][1]} as positive"))
    kpis.append(("Images", f"{metrics['n_images']:,}", f"{len(metrics['classes'])} classes"))
    return kpis


def _architecture(spec: ModelSpec) -> str:
    backbone = spec.arch_args.get("backbone")
    return f"{spec.architecture} ({backbone})" if backbone else spec.architecture


def _counts(run: Run) -> dict:
    """Images per class and split, from the run's split (the exact files), else from its config."""
    try:
        dataset = run.dataset
        counts, classes = dataset.counts(), dataset.classes
    except ImgclsError:
        counts = run.config.get("data", {}).get("counts", {})
        classes = run.config.get("data", {}).get("classes") or sorted({c for per in counts.values() for c in per})
    rows = [(name, [counts[s].get(name, 0) for s in counts]) for name in classes]
    return {"splits": list(counts), "rows": rows, "totals": [sum(counts[s].values()) for s in counts]}


def _predictions(run: Run) -> dict:
    from imgcls.evaluation import predict_run

    return {"predictions": predict_run(run, cached_features=True)}


def _mistakes(predicted) -> dict:
    from imgcls.evaluation import top_mistakes

    found = top_mistakes(predicted, SHOWN_MISTAKES)
    wrong = int((predicted.probs.argmax(1) != predicted.labels).sum())
    tiles = [
        Tile(
            _photo_uri(m.path),
            [
                ("name", m.path.name),
                ("", f"true: {m.true_label}"),
                ("bad", f"predicted: {m.predicted_label} {m.probability:.1%}"),
            ],
            display_path(m.path),
        )
        for m in found
    ]
    return {"described": predicted.described, "wrong": wrong, "total": len(predicted.labels), "tiles": tiles}


def _roc(predicted) -> dict:
    from imgcls.evaluation import classification_metrics, roc_curve_points
    from imgcls.plots import plot_roc

    if len(predicted.classes) != 2 or len(set(predicted.labels.tolist())) != 2:
        _skip("ROC curves are drawn for two classes")
    auc = classification_metrics(predicted.probs, predicted.labels, predicted.classes)["roc_auc"]
    fpr, tpr = roc_curve_points(predicted.probs[:, 1], predicted.labels)
    with tempfile.TemporaryDirectory() as folder:
        path = plot_roc(fpr, tpr, auc, predicted.classes[1], Path(folder) / "roc.png")
        return {"image": _file_uri(path)}


def _grad_cam(run: Run, predicted) -> dict:
    """Grad-CAM of the worst mistakes and of the most confident correct prediction of each class."""
    from imgcls.explain import explain, grad_cam_layer, supports_grad_cam
    from imgcls.inference import Classifier

    classifier = Classifier.load(run, engine="torch")
    if not supports_grad_cam(classifier):
        _skip(f"no Grad-CAM: {classifier.spec.architecture} has no convolutional feature map larger than 1x1")
    right = predicted.probs.argmax(1) == predicted.labels
    tiles = []
    for index in _grad_cam_examples(predicted):
        path = predicted.paths[index]
        explanation = explain(classifier, path)
        verdict = "good" if right[index] else "bad"
        tiles.append(
            Tile(
                _array_uri(explanation.overlay),
                [
                    ("name", path.name),
                    ("", f"true: {predicted.classes[predicted.labels[index]]}"),
                    (verdict, f"predicted: {explanation.label} {explanation.probability:.1%}"),
                ],
                display_path(path),
            )
        )
    return {"tiles": tiles, "layer": grad_cam_layer(classifier)}


def _grad_cam_examples(predicted) -> list[int]:
    """Indices of the worst mistakes (half the examples at most), then the most confident correct
    image of each class."""
    labels = predicted.labels
    true_probs = predicted.probs[np.arange(len(labels)), labels]
    right = predicted.probs.argmax(1) == labels
    worst = [int(i) for i in np.argsort(true_probs, kind="stable") if not right[i]][: GRAD_CAM_EXAMPLES // 2]
    best = []
    for label in range(len(predicted.classes)):
        members = np.flatnonzero(right & (labels == label))
        if len(members):
            best.append(int(members[np.argmax(true_probs[members])]))
    return (worst + best)[:GRAD_CAM_EXAMPLES]


def _suspects(run: Run, wanted: bool | None) -> dict:
    from imgcls.suspects import find_suspects

    if wanted is False:
        _skip(f"not computed; run: imgcls data suspects {run}")
    if wanted is None and not _suspects_are_cheap(run):
        _skip(f"not computed automatically (needs fresh backbone features); run: imgcls report {run} --suspects")
    found = find_suspects(run)
    tiles = [
        Tile(
            _photo_uri(s.path),
            [
                ("name", f"{s.path.name} ({s.split})"),
                ("", f"filed as: {s.given_label}"),
                (
                    "bad" if s.predicted_label != s.given_label else "",
                    f"model: {s.predicted_label} {s.predicted_probability:.1%}",
                ),
            ],
            display_path(s.path),
        )
        for s in found.suspects[:SHOWN_SUSPECTS]
    ]
    return {"report": found, "tiles": tiles, "rows": found.suspects[:SUSPECT_ROWS]}


def _suspects_are_cheap(run: Run) -> bool:
    """A transfer run with a frozen backbone: training cached the features of every image."""
    recipe = run.transfer_recipe
    return recipe is not None and not recipe.fine_tune


def _check(run: Run) -> dict:
    """`data check` on exactly the files the run trained on (whatever labelled them); with the outlier
    check when the run's frozen backbone has their features cached already."""
    from imgcls.data.check import check_dataset

    dataset = run.dataset
    if not dataset.root.is_dir():
        _skip(f"data folder {display_path(dataset.root)} not found")
    split_by = {"val_split": run.recipe.val_split, "seed": run.options.seed} if "recipe" in run.config else {}
    features = _cached_features(run) if _suspects_are_cheap(run) else None
    report = check_dataset(dataset, near_limit=NEAR_DUPLICATE_LIMIT, features=features, **split_by)
    leaks = [d for d in report["exact_duplicates"] if d.get("cross_split")]
    conflicts = [d for d in report["exact_duplicates"] if d.get("label_conflict")]
    return {"report": report, "leaks": leaks, "conflicts": conflicts}


def _cached_features(run: Run):
    """The outlier check's features from the run's frozen backbone (training cached them)."""

    def features(paths: list[Path]):
        from imgcls.suspects import feature_extractor, quality_features

        extractor, described = feature_extractor(run)
        return quality_features(extractor, paths, described)

    return features


# --------------------------------------------------------------------------- pictures


def _file_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _photo_uri(path: Path) -> str:
    from imgcls.visual.audit import thumbnail

    return _array_uri(thumbnail(path, TILE_PIXELS))


def _array_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- page


def _template():
    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters["pct"] = lambda value: f"{value:.1%}"
    environment.filters["num"] = lambda value: f"{value:.3f}"
    environment.filters["thousands"] = lambda value: f"{value:,}"
    return environment.from_string(files("imgcls.report").joinpath("template.html").read_text(encoding="utf-8"))
