"""int8 export: does `imgcls export RUN --quantize int8` pay on this CPU?

Claim: ONNX Runtime's static int8 (QDQ, calibrated on 100 training photos) keeps the float32
accuracy of a cats-vs-dogs transfer model within 0.5 points and predicts faster on this 2-core AVX2
machine (no VNNI). Evidence: accuracy of both on the run's 1,000 validation photos, images/s of both
at batch 16 (alternating rounds, median), the time quantizing takes, and the file sizes. The run is
copied first, so the measured folder stays as it was; `--force` semantics: the int8 model is always
measured, whatever `quantize_run` would decide.

    python benchmarks/bench_quantize.py RUN [RUN...] [--rounds 15] [--tag=-x]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import write_result

from imgcls.export import quantize
from imgcls.export.quantize import quantize_run
from imgcls.run import Run


def measure(source: Path, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(shutil.copytree(source, Path(folder) / source.name, ignore=shutil.ignore_patterns("*.ckpt")))
        quantize.QUANTIZE["timing_rounds"] = rounds
        started = time.perf_counter()
        result = quantize_run(copy, force=True)
        seconds = time.perf_counter() - started
        sizes = {"fp32_mb": Run(copy).onnx_path.stat().st_size / 1e6, "int8_mb": result.path.stat().st_size / 1e6}
    row = {k: v for k, v in result.as_dict().items() if k not in ("path", "kept", "reason")}
    decision = quantize._decide(result, quantize.QUANTIZE, force=False)  # what it decides without --force
    return {"run": str(source), "seconds": round(seconds, 1), **row, **sizes, "decision": decision.reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished run folders")
    parser.add_argument("--rounds", type=int, default=15, help="alternating fp32/int8 timing rounds")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        row = measure(run, args.rounds)
        print(
            f"{run.name}: fp32 {row['fp32_accuracy']:.2%} {row['fp32_images_per_s']:.1f}/s, "
            f"int8 {row['int8_accuracy']:.2%} {row['int8_images_per_s']:.1f}/s ({row['speedup']:.2f}x), "
            f"{row['seconds']} s; {row['decision']}",
            flush=True,
        )
        rows.append(row)
    write_result(f"quantize{args.tag}", {"settings": quantize.QUANTIZE, "runs": rows})


if __name__ == "__main__":
    main()
