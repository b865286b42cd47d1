"""Bounds on what one client can hold of the server, below the app (uvicorn's HTTP/1.1 protocol):

- a request head must arrive whole within `HEAD_TIMEOUT_S` of the connection (or of its first byte
  after an answer): slowloris clients that send a header a second are closed;
- an idle keep-alive connection is closed after `KEEP_ALIVE_S`;
- at most `MAX_CONNECTIONS` connections at once; beyond, uvicorn answers 503 at once;
- a head larger than `MAX_HEAD_BYTES` is refused with 431;
- the body itself must arrive within `--body-timeout` seconds (`uploads.UploadLimit`: 408), and
  never beyond the upload limit (413).

Measured in benchmarks/bench_serve_abuse.py: good requests/s and p95 while these clients run.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5.0
MAX_CONNECTIONS = 512
MAX_HEAD_BYTES = 32 * 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head."""

    head_timeout_s = HEAD_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes, self._tail = 0, b""
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head() and self._head_too_large(data):
            self._refuse(431, f"request head larger than {MAX_HEAD_BYTES // 1024} KiB")
            return
        super().data_received(data)
        if not self._waiting_for_head():
            self._disarm()
        elif self._head_timer is None:  # the first bytes of the next request on a kept-alive connection
            self._arm()

    def _head_too_large(self, data: bytes) -> bool:
        """Counts the head's bytes up to its blank line (h11 only bounds heads that arrive in pieces)."""
        joined = self._tail + data
        end = joined.find(b"\r\n\r\n")
        size = self._head_bytes + (end + 4 - len(self._tail) if end >= 0 else len(data))
        self._head_bytes, self._tail = (0, b"") if end >= 0 else (size, joined[-3:])
        return size > MAX_HEAD_BYTES

    def _refuse(self, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        if not self.transport.is_closing():
            self.transport.write(head.encode() + body)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.transport.close()


def server_options(**overrides: Any) -> dict[str, Any]:
    """uvicorn options with these bounds: for `uvicorn.run` and `uvicorn.Config` alike."""
    return {
        "http": GuardedH11Protocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "limit_concurrency": MAX_CONNECTIONS,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        **overrides,
    }
