"""The costs `--budget` plans with: seconds per photo (decode + features, cold cache) of every
candidate in `imgcls.training.budget.CANDIDATES`, relative to its reference, side by side in one
process, each measured after its backbone and ONNX session are built (building is timed apart).

    python benchmarks/bench_budget.py [--photos 300] [--repeats 2]

The `cost` column is what CANDIDATES should say; `recipe cost` is what it says now.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from common import shared_data, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300, help="training photos per candidate and repeat")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the candidates, each on a fresh cache")
    args = parser.parse_args()

    import torch

    from imgcls.data.discover import discover
    from imgcls.recipes import get_recipe
    from imgcls.training import budget

    dataset = discover(shared_data("cats_vs_dogs"), 0.2, 0)
    samples = budget._sample(dataset.splits["train"], args.photos)
    recipe = get_recipe("transfer")
    seconds: dict[str, list[float]] = {name: [] for name in budget.CANDIDATES}
    built: dict[str, list[float]] = {name: [] for name in budget.CANDIDATES}
    for _ in range(args.repeats):
        os.environ["IMGCLS_CACHE"] = tempfile.mkdtemp(prefix="imgcls-bench-budget-")
        for name in budget.CANDIDATES:
            candidate = budget._candidate_recipe(recipe, name)
            began = time.perf_counter()
            extractor = budget._extractor(candidate)
            extractor.forward(torch.zeros(1, 3, candidate.image_size, candidate.image_size))
            ready = time.perf_counter()
            budget._extract(candidate, samples, extractor)
            seconds[name].append((time.perf_counter() - ready) / len(samples))
            built[name].append(ready - began)
    reference = statistics.median(seconds[budget.REFERENCE])
    rows = []
    for name, values in seconds.items():
        per_photo = statistics.median(values)
        row = {
            "candidate": name,
            "ms_per_photo": round(1000 * per_photo, 2),
            "cost": round(per_photo / reference, 2),
            "recipe_cost": budget.CANDIDATES[name].cost,
            "build_seconds": round(statistics.median(built[name]), 2),
        }
        rows.append(row)
        print(
            f"{name:32} {row['ms_per_photo']:7.2f} ms/photo  cost {row['cost']:.2f} (recipe {row['recipe_cost']})  "
            f"built in {row['build_seconds']:.1f} s"
        )
    write_result(
        "budget-costs",
        {"photos": len(samples), "repeats": args.repeats, "threads": torch.get_num_threads(), "rows": rows},
    )


if __name__ == "__main__":
    main()
