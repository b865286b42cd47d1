"""The costs `--budget` plans with: seconds per photo (decode + features, cold cache) of every
candidate in `imgcls.training.budget.CANDIDATES`, relative to its reference, side by side in one
process, each measured after its backbone and ONNX session are built (building is timed apart).

    python benchmarks/bench_budget.py [--photos 300] [--repeats 2]
    python benchmarks/bench_budget.py --fine-tune-step    # a stage-2 step of each backbone instead

The `cost` column is what CANDIDATES should say; `recipe cost` is what it says now. With
--fine-tune-step: milliseconds per photo of one fine-tuning step (last 2 blocks trainable, batch
32, channels_last) and of an eval forward in PyTorch, per distinct backbone and size.
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
    parser.add_argument("--fine-tune-step", action="store_true", help="time a stage-2 step per backbone instead")
    args = parser.parse_args()
    if args.fine_tune_step:
        fine_tune_steps()
        return

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
            extractor = budget._extractor(candidate, {})  # built afresh: its build is timed
            extractor.forward(torch.zeros(1, 3, candidate.image_size, candidate.image_size))
            ready = time.perf_counter()
            budget._extract(extractor, samples)
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


def fine_tune_steps(batch: int = 32, steps: int = 4) -> None:
    """Forward + backward + AdamW step with the last 2 blocks trainable, as stage 2 trains (batch
    norms in inference mode), and a no-grad forward, on random pixels: what the budget's
    FINE_TUNE_COST assumes scales like the features."""
    import torch

    from imgcls.models.backbones import batchnorm_inference_mode, create_backbone, set_trainable
    from imgcls.training import budget

    rows = []
    for backbone, size in dict.fromkeys((c.backbone, c.image_size) for c in budget.CANDIDATES.values()):
        network, _ = create_backbone(backbone)
        set_trainable(network, "last:2")
        network = network.train().to(memory_format=torch.channels_last)
        batchnorm_inference_mode(network)
        head = torch.nn.Linear(network(torch.zeros(2, 3, size, size)).shape[1], 1)
        trained = [p for p in network.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.AdamW(trained, lr=1e-4)
        pixels = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        seconds = []
        for _ in range(steps):
            began = time.perf_counter()
            loss = head(network(pixels)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - began)
        with torch.no_grad():
            began = time.perf_counter()
            network.eval()(pixels)
            forward = time.perf_counter() - began
        row = {
            "backbone": backbone,
            "image_size": size,
            "train_ms_per_photo": round(1000 * min(seconds[1:]) / batch, 1),
        }
        row["eval_ms_per_photo"] = round(1000 * forward / batch, 1)
        rows.append(row)
        print(f"{backbone:20} {size} px  step {row['train_ms_per_photo']} ms/photo, eval {row['eval_ms_per_photo']}")
    write_result("budget-fine-tune-step", {"batch": batch, "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
