"""Eval crops: trained runs' accuracy on held-out photos with other `eval_crops` (FixRes, multi-scale TTA).

    python benchmarks/bench_eval_crop.py RUN [RUN ...] --crops 1/0.9/0.8/0.75/0.9,0.8,0.7

Each run's kept weights are scored on its val photos (DATA/val by default) with the model's own flip
TTA, once per set of crops (sets split by "/", the crops of a set by ","): a model trained on random
resized crops sees objects larger than a whole photo shows them, and zooming into the centre at
prediction time matches them again; several crops average their views' logits.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

import numpy as np
from common import shared_data, write_result


def accuracy_at_crops(run_dir: Path, data: Path, crop_sets: list[tuple[float, ...]]) -> dict[str, float]:
    import imgcls
    from imgcls.data.cache import decode_all
    from imgcls.models.classifier import build_classifier, predict_probabilities

    run = imgcls.Run.open(run_dir)
    trained, spec = run.load_model()
    photos = sorted((data / "val").glob("*/*"))
    labels = [spec.classes.index(path.parent.name) for path in photos]
    decoded = decode_all(photos, labels, run.decode_settings())
    truth = decoded.labels.numpy()
    scores = {}
    for crops in crop_sets:
        model = build_classifier(dataclasses.replace(spec, eval_crops=crops))
        model.load_state_dict(trained.state_dict())
        predicted = predict_probabilities(model, spec.output, decoded.images).argmax(1)
        name = ",".join(map(str, crops))
        scores[name] = round(float(np.mean(predicted == truth)), 4)
        print(f"{run_dir}: eval_crops {name}: {scores[name]:.1%}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=None, help="default: shared cats_vs_dogs")
    parser.add_argument("--crops", default="1/0.9/0.8/0.75/0.9,0.8,0.7")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    data = args.data or shared_data("cats_vs_dogs")
    crop_sets = [tuple(float(c) for c in crops.split(",")) for crops in args.crops.split("/")]
    runs = {str(run): accuracy_at_crops(run, data, crop_sets) for run in args.runs}
    names = list(next(iter(runs.values())))
    means = {name: round(statistics.mean(r[name] for r in runs.values()), 4) for name in names}
    print("mean over runs: " + ", ".join(f"{c}: {m:.1%}" for c, m in means.items()))
    write_result(f"eval-crop{args.tag}", {"data": str(data), "runs": runs, "mean": means})


if __name__ == "__main__":
    main()
