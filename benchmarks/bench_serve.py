"""Serving benchmark: `imgcls serve RUN` in its own process on loopback, driven by concurrent clients.

1. load: CLIENTS threads, each with its own keep-alive connection, send REQUESTS photos (the shared
   val photos, cut to 224x224 JPEGs) as fast as answers come back: requests/s, latency p50/p95/p99,
   errors (a non-200 or an answer that differs from the same photo predicted alone).
2. the same load with MALFORMED bad requests mixed in (text, truncated JPEG, empty, decompression
   bomb, oversized with and without Content-Length, wrong field, GET): every bad one must get a 4xx,
   every good one its right answer.
3. the same load on a server that always batches (--max-batch 16) and on one that never does
   (--max-batch 1), beside the default (--max-batch auto: the size measured cheapest per image);
   and lone requests, one at a time, rotating between the three servers running side by side.

    python benchmarks/bench_serve.py RUN                 # 8 clients x 100 requests, 200 malformed
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
from common import shared_data, write_result
from PIL import Image, ImageOps

UPLOAD_LIMIT_MB = 2  # the served limit here, so that oversized requests are cheap to send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--malformed", type=int, default=200)
    parser.add_argument("--lone", type=int, default=200, help="sequential requests for the lone-latency step")
    parser.add_argument("--photos", type=int, default=200, help="distinct photos sent")
    parser.add_argument("--size", type=int, default=224, help="photos are cut to SIZE x SIZE JPEGs")
    parser.add_argument("--batched", type=int, default=16, help="--max-batch of the always-batching server")
    parser.add_argument("--batch-window-ms", type=float, default=3.0)
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args()

    photos = load_photos(args.photos, args.size)
    window = ["--batch-window-ms", str(args.batch_window_ms)]
    configurations = {  # server name -> `imgcls serve` options
        "default": window,  # --max-batch auto: the batch size measured cheapest per image at start
        f"batch{args.batched}": ["--max-batch", str(args.batched), *window],
        "unbatched": ["--max-batch", "1"],
    }
    # the servers run side by side, so that whatever else shares the CPU weighs on all of them alike
    with ExitStack() as stack:
        servers = {name: stack.enter_context(server(args.run, options)) for name, options in configurations.items()}
        urls = {name: url for name, (url, _) in servers.items()}
        expected = reference_answers(urls["default"], photos)
        lone = lone_latency(urls, photos, args.lone)
        loads = {}
        for name, (url, process) in servers.items():
            loads[name] = run_load(url, photos, expected, args.clients, args.requests, 0, process.pid)
        url, process = servers["default"]
        loads["default + malformed"] = run_load(
            url, photos, expected, args.clients, args.requests, args.malformed, process.pid
        )
        health = {name: httpx.get(url + "health").json() for name, (url, _) in servers.items()}
        server_rss = peak_rss_of(process.pid)

    report(args, loads, lone, health)
    batched = f"batch{args.batched}"
    write_result(
        f"serve{args.tag}",
        {
            "run": str(args.run),
            "photos": {"distinct": len(photos), "size": f"{args.size}x{args.size} JPEG", "source": "cats_vs_dogs/val"},
            "servers": configurations,
            "default_max_batch": health["default"]["max_batch"],
            "batch_cost_ms_per_image": health["default"]["batch_cost_ms_per_image"],
            "load": loads,
            "lone_ms": lone,
            "lone_p50_ratio_batched_to_unbatched": round(lone[batched]["p50"] / lone["unbatched"]["p50"], 3),
            "lone_p50_ratio_default_to_unbatched": round(lone["default"]["p50"] / lone["unbatched"]["p50"], 3),
            "batches": {
                name: {k: h[k] for k in ("served", "refused", "max_batch", "batches", "largest_batch")}
                | {"mean_batch": round(h["served"] / max(1, h["batches"]), 2)}
                for name, h in health.items()
            },
            "default_server_peak_rss_mib": server_rss,
        },
    )


# --------------------------------------------------------------------------- inputs


def load_photos(count: int, size: int) -> list[bytes]:
    folder = shared_data("cats_vs_dogs") / "val"
    files = sorted(folder.glob("cat/*.jpg"))[: count // 2] + sorted(folder.glob("dog/*.jpg"))[: count - count // 2]
    photos = []
    for file in files:
        with Image.open(file) as image:
            buffer = io.BytesIO()
            ImageOps.fit(image.convert("RGB"), (size, size)).save(buffer, format="JPEG", quality=90)
            photos.append(buffer.getvalue())
    return photos


def malformed_requests(photo: bytes) -> list[tuple[str, dict]]:
    """(name, httpx.request keyword arguments) of each kind of bad request; every one deserves a 4xx."""
    big = os.urandom(UPLOAD_LIMIT_MB * 2**20 + 100_000)

    def chunks():
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    bomb_header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", bomb_header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return [
        ("text", {"method": "POST", "files": {"file": ("notes.txt", b"not a photo\n" * 20)}}),
        ("truncated_jpeg", {"method": "POST", "files": {"file": ("cut.jpg", photo[: len(photo) // 3])}}),
        ("empty", {"method": "POST", "content": b"", "headers": {"content-type": "image/jpeg"}}),
        ("bomb_png", {"method": "POST", "content": bomb, "headers": {"content-type": "image/png"}}),
        ("oversized", {"method": "POST", "content": big, "headers": {"content-type": "image/jpeg"}}),
        ("oversized_chunked", {"method": "POST", "content": chunks, "headers": {"content-type": "image/jpeg"}}),
        ("wrong_field", {"method": "POST", "files": {"image": ("photo.jpg", photo)}}),
        ("get", {"method": "GET"}),
    ]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


# --------------------------------------------------------------------------- server


@contextmanager
def server(run: Path, options: list[str]):
    port = free_port()
    command = [str(Path(sys.executable).parent / "imgcls"), "serve", str(run), "--port", str(port)]
    command += ["--max-upload-mb", str(UPLOAD_LIMIT_MB), *options]
    with tempfile.TemporaryFile("w+") as log:  # a pipe nobody reads would fill and stop the server
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_up(url, process, log)
            yield url, process
        finally:
            process.terminate()
            process.wait(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            sys.exit(f"imgcls serve exited with {process.returncode}:\n{log.read()}")
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.25)
    sys.exit("imgcls serve did not start")


def peak_rss_of(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 0)
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- clients


def predict(client: httpx.Client, url: str, photo: bytes) -> tuple[float, httpx.Response | None]:
    started = time.perf_counter()
    try:
        response = client.post(url + "predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
    except httpx.HTTPError:
        response = None
    return (time.perf_counter() - started) * 1000, response


def reference_answers(url: str, photos: list[bytes]) -> list[dict]:
    """Each photo predicted alone, one at a time: what every answer under load must equal."""
    with httpx.Client(timeout=60) as client:
        return [predict(client, url, photo)[1].json()["probabilities"] for photo in photos]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    url: str, photos: list[bytes], expected: list[dict], clients: int, requests: int, malformed: int, pid: int
) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    good_errors: Counter = Counter()
    bad_statuses: Counter = Counter()
    bad_kinds = malformed_requests(photos[0])
    lock = threading.Lock()

    def client_loop(index: int) -> None:
        rng = np.random.default_rng(index)
        bad_here = malformed // clients + (index < malformed % clients)
        plan = ["good"] * requests + ["bad"] * bad_here
        rng.shuffle(plan)
        with httpx.Client(timeout=60) as client:
            for step, kind in enumerate(plan):
                if kind == "bad":
                    name, request = bad_kinds[(index + step) % len(bad_kinds)]
                    status = send_bad(client, url, request)
                    with lock:
                        bad_statuses[f"{name}:{status}"] += 1
                    continue
                photo_index = int(rng.integers(len(photos)))
                elapsed, response = predict(client, url, photos[photo_index])
                problem = check(response, expected[photo_index])
                with lock:
                    if problem:
                        good_errors[problem] += 1
                    else:
                        latencies[index].append(elapsed)

    started, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(pid), time.process_time()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    total = clients * requests + malformed
    done = np.array([x for per_client in latencies for x in per_client])
    sent_good = clients * requests
    bad_ok = sum(n for key, n in bad_statuses.items() if key.split(":")[1].startswith("4"))
    return {
        "clients": clients,
        "good_requests": sent_good,
        "malformed_requests": sum(bad_statuses.values()),
        "seconds": round(seconds, 2),
        "good_requests_per_s": round(sent_good / seconds, 1),
        "latency_ms": percentiles(done),
        # CPU per request (all requests of the step): what the load costs whatever else shares the machine
        "server_cpu_ms_per_request": round(1000 * server_cpu / total, 1),
        "client_cpu_ms_per_request": round(1000 * client_cpu / total, 1),
        "server_cpu_cores_used": round(server_cpu / seconds, 2),
        "good_errors": sum(good_errors.values()),
        "good_error_kinds": dict(good_errors),
        "malformed_answered_4xx": bad_ok,
        "malformed_statuses": dict(sorted(bad_statuses.items())),
    }


def send_bad(client: httpx.Client, url: str, request: dict) -> str:
    request = dict(request)
    if callable(request.get("content")):
        request["content"] = request["content"]()
    try:
        return str(client.request(url=url + "predict", **request).status_code)
    except httpx.HTTPError as error:  # e.g. the server closed the connection mid-upload after its 413
        return type(error).__name__


def check(response: httpx.Response | None, expected: dict) -> str | None:
    if response is None:
        return "connection error"
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    got = response.json()["probabilities"]
    if got.keys() != expected.keys() or any(abs(got[k] - expected[k]) > 1e-4 for k in got):
        return "different answer"
    return None


def lone_latency(urls: dict[str, str], photos: list[bytes], count: int) -> dict[str, dict]:
    """One request at a time, alternating between the servers in a shuffled order: latency per server."""
    rng = np.random.default_rng(0)
    clients = {name: httpx.Client(timeout=60) for name in urls}
    times: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for name, url in urls.items():
            for photo in photos[:5]:
                predict(clients[name], url, photo)  # warm the connection and the server
        for i in range(count):
            for name in rng.permutation(list(urls)):
                times[name].append(predict(clients[name], urls[name], photos[i % len(photos)])[0])
    finally:
        for client in clients.values():
            client.close()
    return {name: percentiles(np.array(values)) for name, values in times.items()}


def percentiles(values: np.ndarray) -> dict:
    if not len(values):
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(p50, 1), "p95": round(p95, 1), "p99": round(p99, 1), "mean": round(values.mean(), 1)}


def report(args, loads: dict[str, dict], lone: dict[str, dict], health: dict[str, dict]) -> None:
    print(f"\n{args.clients} clients x {args.requests} requests, {args.size}px JPEGs")
    for name, result in loads.items():
        latency = result["latency_ms"]
        malformed = result["malformed_requests"]
        print(
            f"  {name:20s} {result['good_requests_per_s']:6.1f} req/s  p50 {latency['p50']:6.1f}  p95 "
            f"{latency['p95']:6.1f}  p99 {latency['p99']:6.1f} ms  errors {result['good_errors']}  "
            f"server CPU {result['server_cpu_ms_per_request']} ms/request"
            + (f"  malformed answered 4xx: {result['malformed_answered_4xx']}/{malformed}" if malformed else "")
        )
    print("  lone request p50: " + ", ".join(f"{name} {value['p50']} ms" for name, value in lone.items()))
    costs = health["default"]["batch_cost_ms_per_image"]
    print(f"  default server: --max-batch auto chose {health['default']['max_batch']} (CPU ms per image: {costs})")


if __name__ == "__main__":
    main()
