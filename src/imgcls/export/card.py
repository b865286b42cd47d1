"""The model card (`README.md`) of a Hugging Face export, filled from the run folder.

What a reader of the Hub page needs to decide whether to trust the model: what it tells apart, how
to load it, the data it saw, its held-out metrics per class and confusion matrix, what `data check`
found in that data, how fast it is on this CPU, and how it was trained. The YAML front matter is
`huggingface_hub`'s `ModelCardData` (library, pipeline tag, license, accuracy as an eval result).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import yaml

from imgcls.errors import ImgclsError, first_line
from imgcls.files import display_path
from imgcls.models.classifier import ImageClassifier, ModelSpec
from imgcls.run import Run

_LOCAL_OPTIONS = ("data_dir", "labels", "address")  # paths and addresses of this machine, not published
LATENCY_CALLS = 20  # single-image calls timed for the median latency
THROUGHPUT_BATCH = 16  # images per call for images/s (predict's default batch)
THROUGHPUT_ROUNDS = 3


def model_card(run: Run, model: ImageClassifier, spec: ModelSpec, layout: str, license: str) -> str:
    """The whole README.md: front matter, then one section per question a reader asks."""
    sections = [
        _title(run, spec),
        _usage(run, spec, layout),
        _training_data(run),
        _evaluation(run),
        _data_check(run),
        _speed(run, spec),
        _how_trained(run),
        _limitations(spec, layout),
    ]
    return _front_matter(run, spec, layout, license) + "\n" + "\n\n".join(s for s in sections if s) + "\n"


def _front_matter(run: Run, spec: ModelSpec, layout: str, license: str) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    metrics = run.metrics
    results = None
    if "accuracy" in metrics:
        dataset = run.config.get("data", {}).get("argument") or "images"
        results = [
            EvalResult(
                task_type="image-classification",
                dataset_type="imagefolder",
                dataset_name=Path(str(dataset)).name or str(dataset),
                dataset_split=str(metrics.get("split", "val")),
                metric_type="accuracy",
                metric_value=round(float(metrics["accuracy"]), 4),
            )
        ]
    data = ModelCardData(
        library_name="timm" if layout == "timm" else "imgcls",
        pipeline_tag="image-classification",
        license=license,
        tags=["image-classification", "imgcls"] + (["timm"] if layout == "timm" else []),
        model_name=run.name,
        eval_results=results,
        metrics=["accuracy"] if results else None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _title(run: Run, spec: ModelSpec) -> str:
    recipe = run.config.get("recipe", {})
    about = f"recipe `{recipe['name']}`: {recipe.get('description', '')}" if recipe else f"`{spec.architecture}`"
    classes = ", ".join(f"`{name}`" for name in spec.classes)
    return (
        f"# {run.name}\n\nAn image classifier for {len(spec.classes)} classes ({classes}), "
        f"trained with [imgcls](https://pypi.org/project/imgcls/) ({about}).\n\n"
        f"Input: RGB photos at {spec.image_size}x{spec.image_size} px ({_resize_words(spec.resize)})."
    )


def _resize_words(resize: str) -> str:
    return {
        "crop": "short side resized to the size, then the centre cut out",
        "squash": "the whole photo resized, aspect ratio not kept",
        "pad": "the whole photo resized with its aspect ratio kept, centred on grey",
    }.get(resize, resize)


def _usage(run: Run, spec: ModelSpec, layout: str) -> str:
    imgcls_code = (
        "```python\nimport imgcls  # pip install imgcls\n\n"
        'classifier = imgcls.load("path/to/this/folder")  # after `hf download user/repo --local-dir ...`\n'
        'print(classifier.predict(["photo.jpg"]))\n```\n\n'
        "or on the command line: `imgcls predict FOLDER photos/`, `imgcls serve FOLDER`."
    )
    if layout != "timm":
        return "## How to use\n\nThis model's architecture is imgcls's own; load it with imgcls:\n\n" + imgcls_code
    timm_code = (
        "```python\nimport timm, torch\nfrom PIL import Image\n\n"
        'model = timm.create_model("hf-hub:USER/REPO", pretrained=True).eval()  # or "local-dir:FOLDER"\n'
        "config = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**config)\n"
        'pixels = transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)\n'
        "with torch.no_grad():\n"
        "    probabilities = model(pixels).softmax(dim=1)[0]\n"
        'label = model.pretrained_cfg["label_names"][int(probabilities.argmax())]\n```'
    )
    return "## How to use\n\nWith plain timm (no imgcls needed):\n\n" + timm_code + "\n\nWith imgcls:\n\n" + imgcls_code


def _training_data(run: Run) -> str:
    data = run.config.get("data") or {}
    counts: dict[str, dict[str, int]] = data.get("counts") or {}
    if not counts:
        return ""
    classes = list(data.get("classes") or next(iter(counts.values())).keys())
    splits = list(counts)
    rows = [f"| class | {' | '.join(splits)} |", "|---|" + "---:|" * len(splits)]
    rows += [f"| {name} | {' | '.join(str(counts[s].get(name, 0)) for s in splits)} |" for name in classes]
    totals = " | ".join(f"**{sum(counts[s].values()):,}**" for s in splits)
    rows.append(f"| all | {totals} |")
    where = _public_name(data.get("argument") or data.get("root") or "")
    split_rule = {"folders": "the dataset's own train/ and val/ folders"}.get(str(data.get("split")), data.get("split"))
    return f"## Training data\n\n`{where}`; split: {split_rule}.\n\n" + "\n".join(rows)


def _evaluation(run: Run) -> str:
    metrics = run.metrics
    if "accuracy" not in metrics:
        return ""
    classes = metrics.get("classes", [])
    headline = [f"accuracy **{metrics['accuracy']:.2%}**", f"loss {metrics.get('loss', float('nan')):.4f}"]
    if "macro_f1" in metrics:
        headline.append(f"macro F1 {metrics['macro_f1']:.4f}")
    if metrics.get("roc_auc") is not None:
        headline.append(f"ROC AUC {metrics['roc_auc']:.4f}")
    lines = [
        "## Evaluation",
        "",
        f"On the `{metrics.get('split', 'val')}` split ({metrics.get('n_images', '?')} photos not trained on): "
        + ", ".join(headline)
        + ".",
        "",
        "| class | precision | recall | F1 | photos |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in (metrics.get("per_class") or {}).items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    matrix = metrics.get("confusion_matrix")
    if matrix:
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
        lines += ["| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
        lines += [
            f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(classes, matrix, strict=True)
        ]
    shown = [f"![{path.stem}]({path.name})" for path in figures(run)]
    if shown:
        lines += ["", " ".join(shown)]
    return "\n".join(lines)


def figures(run: Run) -> list[Path]:
    """The run's pictures the card shows (copied beside it): its curves and confusion matrix, when there."""
    return [path for path in (run.curves_path, run.confusion_path) if path.is_file()]


def _data_check(run: Run) -> str:
    """`imgcls data check` on exactly the run's files, when they are still where training read them."""
    from imgcls.data.check import check_dataset

    heading = "## Data check\n\n"
    try:
        dataset = run.dataset
    except ImgclsError as error:
        return heading + f"Not checked: {first_line(error)}."
    if not dataset.root.is_dir():
        return heading + f"Not checked: the data folder {display_path(dataset.root)} is not on this machine."
    found = check_dataset(dataset, near_limit=20_000)
    problems = found.get("problems") or []
    summary = (
        f"`imgcls data check` read all {found['n_images']:,} photos: {len(found['unreadable'])} unreadable, "
        f"{len(found['exact_duplicates'])} groups of exact copies, "
        f"{found['near_duplicates_total']} near-duplicate pairs."
    )
    if not problems:
        return heading + summary + " Nothing else to report."
    return heading + summary + "\n\n" + "\n".join(f"- {problem}" for problem in problems)


def _speed(run: Run, spec: ModelSpec) -> str:
    try:
        single_ms, per_second = measure_speed(run, spec)
    except ImgclsError as error:
        return f"## Speed on a CPU\n\nNot measured: {first_line(error)}."
    import onnxruntime

    return (
        f"## Speed on a CPU\n\nMeasured at export on {_cpu_name()} ({os.cpu_count()} cores) with ONNX Runtime "
        f"{onnxruntime.__version__}: **{single_ms:.1f} ms** for one photo (median of {LATENCY_CALLS}), "
        f"**{per_second:.0f} photos/s** in batches of {THROUGHPUT_BATCH}; decoding and resizing not included."
    )


def measure_speed(run: Run, spec: ModelSpec) -> tuple[float, float]:
    """(median ms for one image, images/s at batch THROUGHPUT_BATCH) of the run's ONNX model."""
    from imgcls.engine import OnnxModule, images_per_second
    from imgcls.export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as scratch:
        path = run.onnx_path
        if not path.is_file() or run.onnx_is_stale:
            path = export_onnx(run, Path(scratch) / run.onnx_path.name)
        session = OnnxModule(path)
        pixels = np.random.default_rng(0).integers(0, 256, (THROUGHPUT_BATCH, spec.channels, *(spec.image_size,) * 2))
        pixels = pixels.astype(np.float32)
        single = images_per_second({"one": session}, pixels[:1], LATENCY_CALLS)["one"]
        per_second = images_per_second({"batch": session}, pixels, THROUGHPUT_ROUNDS)["batch"]
    return 1000 / single, per_second


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _how_trained(run: Run) -> str:
    config = run.config
    if "recipe" not in config:
        return ""
    recipe = config["recipe"]
    data = _public_name(config.get("data", {}).get("argument") or "DATA")
    command = f"imgcls train {data} --recipe {recipe['name']}"
    kept = config.get("kept") or {}
    monitor = kept.get("monitor", "val_loss")
    kept_words = (
        f"The model kept is stage `{kept['stage']}`, epoch {kept['epoch']}, chosen on {monitor}." if kept else ""
    )
    options = {k: v for k, v in (config.get("options") or {}).items() if k not in _LOCAL_OPTIONS}
    settings = yaml.safe_dump({"recipe": recipe, "options": options}, sort_keys=False)
    versions = ", ".join(f"{name} {config[name]}" for name in ("imgcls", "torch", "lightning") if config.get(name))
    return (
        f"## How it was trained\n\n```\n{command}\n```\n\n{kept_words}"
        + (f" Versions: {versions}." if versions else "")
        + f"\n\n<details><summary>Every setting (config.yaml)</summary>\n\n```yaml\n{settings}```\n\n</details>"
    )


def _public_name(data: str) -> str:
    """A built-in dataset's name as it is; a folder by its last part: the card is published, this
    machine's paths are nobody's business."""
    return Path(str(data)).name if ("/" in str(data) or "\\" in str(data)) else str(data)


def _limitations(spec: ModelSpec, layout: str) -> str:
    notes = [
        "The metrics come from one held-out split of the training data; photos unlike it "
        "(other cameras, framing, classes not listed above) may be classified worse, and every photo "
        "gets one of the classes above."
    ]
    if spec.flip_tta and layout == "timm":
        notes.append(
            "imgcls averages each photo with its mirror image (flip test-time augmentation); plain timm "
            "predicts the photo alone, so its probabilities differ slightly."
        )
    return "## Limitations\n\n" + "\n".join(f"- {note}" for note in notes)
