"""The default recipe on photos nobody tuned it for (issue 12): is it as good off cats-vs-dogs?

Claim (to be earned): `imgcls train PHOTOS` gives the best model this CPU can make in about a
minute on any small dataset. Evidence: the whole `imgcls train` command (cold cache, no report),
its validation accuracy and wall time, on small datasets built from the shared photos by symlinks:

- `cats-vs-dogs`: the shared Kaggle photos (2,000 train / 1,000 val);
- `cifar-cat-dog`, `cifar-car-truck`: two CIFAR-10 classes, 400 train / 300 val photos each, 32 px
  photos upscaled, objects small and blurry: unlike the Kaggle photos;
- `cifar-10`: all ten classes, 100 train / 100 val each.

Each variant is a list of `imgcls train` options, e.g. `--variant flip="--flip-tta"`.

    python benchmarks/bench_unseen.py [--datasets cifar-cat-dog,...] [--variant NAME="OPTIONS"]... [--tag=-x]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import shared_data, write_result

CIFAR_SETS = {  # name: (classes, train per class, val per class)
    "cifar-cat-dog": (("cat", "dog"), 400, 300),
    "cifar-car-truck": (("automobile", "truck"), 400, 300),
    "cifar-10": (
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        100,
        100,
    ),
}
DEFAULT_VARIANTS = {"default": ""}


def build(name: str, folder: Path) -> Path:
    """The dataset's train/ and val/ class folders, symlinks into the shared photos."""
    if name == "cats-vs-dogs":
        return shared_data("cats_vs_dogs")
    classes, n_train, n_val = CIFAR_SETS[name]
    source = shared_data("cifar10_test")
    root = folder / name
    for label in classes:
        photos = sorted((source / label).glob("*.jpg"))
        for split, chosen in (("train", photos[:n_train]), ("val", photos[n_train : n_train + n_val])):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                (root / split / label / photo.name).symlink_to(photo)
    return root


def train(data: Path, options: str, folder: Path) -> dict:
    """The whole command from a cold cache: accuracy, kept stage and wall seconds."""
    imgcls = Path(sys.executable).with_name("imgcls")
    cache, out = Path(tempfile.mkdtemp(dir=folder)), Path(tempfile.mkdtemp(dir=folder))
    command = [str(imgcls), "train", str(data), "--out", str(out), "--no-report", "--no-progress"]
    command += shlex.split(options)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "IMGCLS_CACHE": str(cache)})
    seconds = time.perf_counter() - started
    run = next(path for path in out.iterdir() if (path / "metrics.json").is_file())
    metrics = json.loads((run / "metrics.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    found = {"accuracy": metrics["accuracy"], "seconds": round(seconds, 1), "kept": config.get("kept", {})}
    return found | ({"budget": config["budget"]["picked"]} if config.get("budget") else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="cats-vs-dogs,cifar-cat-dog,cifar-car-truck,cifar-10")
    parser.add_argument("--variant", action="append", default=[], help='NAME="imgcls train options"')
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant) or DEFAULT_VARIANTS
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.datasets.split(","):
            data = build(name, Path(scratch))
            for variant, options in variants.items():
                row = {"dataset": name, "variant": variant, "options": options, **train(data, options, Path(scratch))}
                picked = f", budget: {row['budget']}" if "budget" in row else ""
                result = f"{row['accuracy']:.2%} in {row['seconds']} s"
                print(f"{name:16} {variant:12} {result} ({row['kept']}{picked})", flush=True)
                rows.append(row)
    write_result(f"unseen{args.tag}", {"runs": rows})


if __name__ == "__main__":
    main()
