"""Streaming prediction: the whole `imgcls predict RUN --from-list FILES --output x.parquet` command.

Claim: a run with its model.onnx predicts files into Parquet at the machine's ONNX Runtime limit
(decoding overlapped with the model, no torch imported), and one photo is answered in well under
1.5 s for the whole command. Evidence: wall time and images/s of the command on 6,000 photos (the
3,000 cats-vs-dogs photos and 3,000 CIFAR-10 photos), and the wall time for one photo.

    python benchmarks/bench_predict_stream.py RUN
    python benchmarks/bench_predict_stream.py RUN --engine ray --tag=-ray   # Ray Data on a local Ray
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from common import shared_data, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder with model.onnx")
    parser.add_argument("--cats-dogs", type=int, default=3000)
    parser.add_argument("--cifar", type=int, default=3000)
    parser.add_argument("--engine", default="auto", help="auto (ONNX Runtime here) or ray (a local Ray)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    files = sorted(shared_data("cats_vs_dogs").rglob("*.jpg"))[: args.cats_dogs]
    files += sorted(shared_data("cifar10_test").rglob("*.jpg"))[: args.cifar]
    imgcls = Path(sys.executable).with_name("imgcls")
    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "files.txt"
        listing.write_text("".join(f"{p}\n" for p in files))
        output = Path(folder) / "predictions.parquet"
        command = [str(imgcls), "predict", str(args.run), "--from-list", str(listing), "--output", str(output)]
        command += ["--engine", args.engine]
        started = time.perf_counter()
        subprocess.run([*command, "--no-progress"], check=True, capture_output=True)
        seconds = time.perf_counter() - started
        rows = pq.read_table(output).num_rows
        one = []
        for photo in files[:5] if args.engine != "ray" else []:  # one photo on Ray measures Ray's start
            started = time.perf_counter()
            subprocess.run([str(imgcls), "predict", str(args.run), str(photo)], check=True, capture_output=True)
            one.append(time.perf_counter() - started)
    print(f"{rows:,} photos in {seconds:.1f} s: {rows / seconds:.1f} images/s for the whole command")
    if one:
        print(f"one photo: {min(one):.2f}-{max(one):.2f} s for the whole command")
    write_result(
        f"predict-stream{args.tag}",
        {
            "run": str(args.run),
            "engine": args.engine,
            "photos": rows,
            "sources": {"cats_vs_dogs": args.cats_dogs, "cifar10_test": args.cifar},
            "command": " ".join([*command, "--no-progress"]).replace(folder, "TMP"),
            "wall_seconds": round(seconds, 1),
            "images_per_s_whole_command": round(rows / seconds, 1),
            "one_photo_seconds": [round(s, 2) for s in one],
        },
    )


if __name__ == "__main__":
    main()
