"""One training step of the seeds' CNN on a CPU, under each speed setting tried for issue 16.

Claim: of the settings tried, two make a seed-basic-cnn step (batch 32, 150 px, Adam) faster and
are kept in imgcls: glibc's malloc keeping freed memory (`imgcls.cpu.keep_freed_memory`, 1.65x) and
fused Adam (1.13x on top), 1.87x together; channels-last (already kept) is 1.27x over NCHW;
torch.compile (inductor) is slower here (x0.82 of the kept step) after ~20 s of compiling on a
cold inductor cache, so it is not used (2026-12-01 log in benchmarks/README.md). Evidence: the median step time of
each variant, each in its own process (the allocator setting lasts for the process), alternating.

    python benchmarks/bench_train_step.py              # every variant, 3 rounds
    python benchmarks/bench_train_step.py --rounds 1 --variants baseline kept
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import write_result

# variant -> settings; "kept" is what imgcls trains with
VARIANTS: dict[str, dict[str, bool]] = {
    "nchw": {"channels_last": False, "keep_freed_memory": False, "fused": False, "compile": False},
    "baseline": {"channels_last": True, "keep_freed_memory": False, "fused": False, "compile": False},
    "keep_freed_memory": {"channels_last": True, "keep_freed_memory": True, "fused": False, "compile": False},
    "kept": {"channels_last": True, "keep_freed_memory": True, "fused": True, "compile": False},
    "kept+compile": {"channels_last": True, "keep_freed_memory": True, "fused": True, "compile": True},
}
SETTINGS = {"batch_size": 32, "image_size": 150, "warmup_steps": 3, "timed_steps": 15}


def measure(settings: dict[str, bool]) -> dict[str, float]:
    """Runs in a fresh process: the step time of the seeds' CNN under `settings`."""
    if settings["keep_freed_memory"]:
        from imgcls.cpu import keep_freed_memory

        keep_freed_memory()
    import torch
    import torch.nn.functional as F

    from imgcls.models.cnn import seed_basic_cnn

    torch.manual_seed(0)
    size, batch = SETTINGS["image_size"], SETTINGS["batch_size"]
    memory = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    images = torch.rand(batch, 3, size, size).mul(255).contiguous(memory_format=memory)
    labels = torch.randint(0, 2, (batch,)).float()
    net = seed_basic_cnn(image_size=size).to(memory_format=memory)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3, fused=settings["fused"] or None)
    model = torch.compile(net) if settings["compile"] else net

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(model(images)[:, 0], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    for _ in range(SETTINGS["warmup_steps"]):
        step()
    times = []
    for _ in range(SETTINGS["timed_steps"]):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"first_step_s": first, "step_ms": 1000 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tag", default="")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(VARIANTS[args.child])))
        return
    found: dict[str, list[dict]] = {name: [] for name in args.variants}
    for _ in range(args.rounds):
        for name in args.variants:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name], check=True, capture_output=True, text=True
            ).stdout
            found[name].append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(r["step_ms"] for r in found.get("baseline", found[args.variants[0]]))
    results = {}
    for name, runs in found.items():
        step_ms = statistics.median(r["step_ms"] for r in runs)
        results[name] = {
            "settings": VARIANTS[name],
            "step_ms_median": round(step_ms, 1),
            "images_per_s": round(SETTINGS["batch_size"] / step_ms * 1000, 1),
            "speedup_vs_baseline": round(base / step_ms, 2),
            "first_step_s_median": round(statistics.median(r["first_step_s"] for r in runs), 2),
            "step_ms_runs": [round(r["step_ms"], 1) for r in runs],
        }
        row = results[name]
        print(
            f"{name:18} {step_ms:7.1f} ms/step  {row['images_per_s']:6.1f} img/s  "
            f"x{row['speedup_vs_baseline']:.2f}  first step {row['first_step_s_median']} s"
        )
    write_result(f"train-step{args.tag}", {"settings": SETTINGS, "rounds": args.rounds, "variants": results})


if __name__ == "__main__":
    main()
