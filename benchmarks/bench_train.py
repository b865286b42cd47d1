"""Training benchmark: epoch time (first vs later), accuracy, peak memory of one recipe.

    python benchmarks/bench_train.py --recipe seed-basic-cnn            # 20 epochs, cats_vs_dogs
    python benchmarks/bench_train.py --recipe scratch --data PATH

The image cache starts empty (a fresh IMGCLS_CACHE) unless --warm-cache, so the first
epoch's figure includes decoding every JPEG once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import peak_rss_mib, shared_data, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="seed-basic-cnn")
    parser.add_argument("--data", type=Path, default=None, help="default: shared cats_vs_dogs")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--warm-cache", action="store_true", help="reuse the normal image cache")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=JSON", help="recipe override, e.g. views=3"
    )
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument("--seed", type=int, default=0, help="imgcls.train(seed=): split, init, batches, augmentation")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "imgcls-bench-runs")
    args = parser.parse_args()
    if not args.warm_cache:
        os.environ["IMGCLS_CACHE"] = tempfile.mkdtemp(prefix="imgcls-bench-cache-")

    import imgcls

    data = args.data or shared_data("cats_vs_dogs")
    started = time.perf_counter()
    overrides = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.set)}
    run = imgcls.train(
        str(data), args.recipe, epochs=args.epochs, out=args.out, progress=False, seed=args.seed, **overrides
    )
    total = time.perf_counter() - started
    history, metrics = run.history, run.spec.metrics
    later = [row["seconds"] for row in history[1:]]
    write_result(
        f"train-{args.recipe}{args.tag}" + ("-warm-cache" if args.warm_cache else ""),
        {
            "overrides": overrides,
            "seed": args.seed,
            "data": str(data),
            "run": str(run),
            "kept": run.kept,
            "epochs": len(history),
            "wall_seconds_total": round(total, 1),
            "first_epoch_seconds": round(history[0]["seconds"], 1),
            "later_epoch_seconds_median": round(statistics.median(later), 1) if later else None,
            "later_train_images_per_s_median": round(statistics.median(r["train_images_per_s"] for r in history[1:]), 1)
            if later
            else None,
            "best_val_accuracy_in_history": max(r["val_accuracy"] for r in history if "val_accuracy" in r),
            "last_epoch_val_accuracy": history[-1]["val_accuracy"],
            "final_model_accuracy": metrics["accuracy"],
            "final_model_split": metrics["split"],
            "peak_rss_mib": round(peak_rss_mib(), 0),
        },
    )


if __name__ == "__main__":
    main()
