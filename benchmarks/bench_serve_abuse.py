"""Serving under abuse: the good load of bench_serve.py, alone and then while abusive clients run.

Claim: the bounds of `imgcls.serve.guard` (head deadline, keep-alive limit, connection cap, head
size) and of `UploadLimit` (body deadline, upload limit) keep a server answering good requests
while it is abused, with bounded memory. Evidence: good requests/s, p50/p95 latency and wrong
answers, without and with the abuse, and the server's memory before and after.

Abuse, all at once, for the whole second load (counts per kind are options):
- idle: connections that send nothing (reopened as the server closes them);
- slow heads: one header line a second (slowloris);
- slow bodies: a declared 100 kB upload sent one byte a second;
- cut bodies: half an upload, then the connection is closed;
- huge heads: 64 KiB of headers;
- oversized: uploads over the limit, as fast as the server refuses them.

    python benchmarks/bench_serve_abuse.py RUN
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from bench_serve import UPLOAD_LIMIT_MB, load_photos, peak_rss_of, reference_answers, run_load, server
from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder")
    parser.add_argument("--clients", type=int, default=8, help="good clients")
    parser.add_argument("--requests", type=int, default=60, help="good requests per client")
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--slow-heads", type=int, default=30)
    parser.add_argument("--slow-bodies", type=int, default=30)
    parser.add_argument("--cut", type=int, default=4, help="threads sending cut-off bodies in a loop")
    parser.add_argument("--huge-heads", type=int, default=4, help="threads sending 64 KiB heads in a loop")
    parser.add_argument("--oversized", type=int, default=4, help="threads sending over-limit uploads in a loop")
    parser.add_argument("--body-timeout", type=float, default=10.0, help="the server's --body-timeout, s")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    photos = load_photos(100, 224)
    with server(args.run, ["--body-timeout", str(args.body_timeout)]) as (url, process):
        host, port = httpx.URL(url).host, httpx.URL(url).port
        expected = reference_answers(url, photos)
        rss_before = current_rss(process.pid)
        quiet = run_load(url, photos, expected, args.clients, args.requests, 0, process.pid)
        abuse = Abuse((host, port), photos[0], args)
        abuse.start()
        time.sleep(3)  # let every abuser take its place
        abused = run_load(url, photos, expected, args.clients, args.requests, 0, process.pid)
        held = abuse.stop()
        health = httpx.get(url + "health", timeout=30).json()
        rss_after, rss_peak = current_rss(process.pid), peak_rss_of(process.pid)

    for name, result in (("quiet", quiet), ("abused", abused)):
        latency = result["latency_ms"]
        print(
            f"{name:7s} {result['good_requests_per_s']:6.1f} good req/s  p50 {latency['p50']:6.1f}  "
            f"p95 {latency['p95']:6.1f} ms  wrong or failed {result['good_errors']}"
        )
    print(f"abusers: {dict(held)}; server RSS {rss_before} -> {rss_after} MiB (peak {rss_peak})")
    write_result(
        f"serve-abuse{args.tag}",
        {
            "run": str(args.run),
            "upload_limit_mb": UPLOAD_LIMIT_MB,
            "body_timeout_s": args.body_timeout,
            "abusers": {k: getattr(args, k) for k in ("idle", "slow_heads", "slow_bodies", "cut", "huge_heads")}
            | {"oversized": args.oversized},
            "quiet": quiet,
            "abused": abused,
            "abuse_outcomes": dict(held),
            "good_requests_per_s_ratio_abused_to_quiet": round(
                abused["good_requests_per_s"] / quiet["good_requests_per_s"], 3
            ),
            "server_rss_mib": {"before": rss_before, "after": rss_after, "peak": rss_peak},
            "refused": health.get("refused"),
        },
    )


HEAD = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n"


def current_rss(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 0)
    return None


class Abuse:
    """Abusive clients in threads until `stop()`; counts how each kind of connection ended."""

    def __init__(self, address: tuple[str, int], photo: bytes, args):
        self.address, self.photo, self.args = address, photo, args
        self.running = threading.Event()
        self.outcomes: Counter = Counter()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.running.set()
        plan = [(self.idle, self.args.idle), (self.slow_head, self.args.slow_heads)]
        plan += [(self.slow_body, self.args.slow_bodies), (self.cut_body, self.args.cut)]
        plan += [(self.huge_head, self.args.huge_heads), (self.oversized, self.args.oversized)]
        for target, count in plan:
            for _ in range(count):
                thread = threading.Thread(target=self.loop, args=(target,), daemon=True)
                thread.start()
                self.threads.append(thread)

    def stop(self) -> Counter:
        self.running.clear()
        for thread in self.threads:
            thread.join(15)
        return self.outcomes

    def loop(self, target) -> None:
        while self.running.is_set():
            try:
                outcome = target()
            except OSError as error:
                outcome = type(error).__name__
            with self.lock:
                self.outcomes[f"{target.__name__}:{outcome}"] += 1

    def connect(self) -> socket.socket:
        client = socket.create_connection(self.address, timeout=30)
        client.settimeout(1.0)
        return client

    def wait_end(self, client: socket.socket) -> str:
        """Until the server answers or closes; the first word of its status line, else 'closed'."""
        while self.running.is_set():
            try:
                data = client.recv(4096)
            except TimeoutError:
                continue
            client.close()
            return data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "closed"
        client.close()
        return "stopped"

    def idle(self) -> str:
        return self.wait_end(self.connect())

    def slow_head(self) -> str:
        client = self.connect()
        client.sendall(b"POST /predict HTTP/1.1\r\n")
        return self.trickle(client, b"X-Slow: 1\r\n")  # one header line a second, never the blank line

    def slow_body(self) -> str:
        client = self.connect()
        client.sendall(HEAD.format(length=100_000).encode())
        return self.trickle(client, b"\xff")  # one byte a second of a declared 100 kB

    def trickle(self, client: socket.socket, piece: bytes) -> str:
        """Send `piece` about once a second until the server answers (its status) or closes."""
        while self.running.is_set():
            try:
                client.sendall(piece)
                data = client.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return "closed"
            client.close()
            return data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "closed"
        client.close()
        return "stopped"

    def cut_body(self) -> str:
        client = self.connect()
        client.sendall(HEAD.format(length=len(self.photo)).encode() + self.photo[: len(self.photo) // 2])
        client.close()
        time.sleep(0.05)
        return "cut"

    def huge_head(self) -> str:
        client = self.connect()
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
        return self.wait_end(client)

    def oversized(self) -> str:
        big = b"\xff\xd8\xff" + bytes(UPLOAD_LIMIT_MB * 2**20 + 4096)
        try:
            with httpx.Client(timeout=30) as client:
                url = f"http://{self.address[0]}:{self.address[1]}/predict"
                return str(client.post(url, content=big, headers={"Content-Type": "image/jpeg"}).status_code)
        except httpx.HTTPError as error:
            return type(error).__name__


if __name__ == "__main__":
    main()
