"""`imgcls serve` under abuse: slow heads and bodies, idle connections, bodies cut off, huge heads,
floods of oversized uploads. Each is bounded (closed, 408, 400, 413) and good requests keep getting
their answers. The limits are shortened here so that the test takes seconds."""

from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from imgcls.serve import create_app
from imgcls.serve.guard import GuardedH11Protocol, server_options

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, pytest.mark.timeout(180)]
HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5


class QuickGuard(GuardedH11Protocol):
    head_timeout_s = HEAD_TIMEOUT_S


@pytest.fixture(scope="module")
def address(served_run: Path, serve_in_thread):
    app = create_app(served_run, max_upload_mb=1, body_timeout_s=BODY_TIMEOUT_S, max_batch=1)
    with serve_in_thread(app, **server_options(http=QuickGuard, log_level="warning")) as bound:
        yield bound


def connect(address) -> socket.socket:
    client = socket.create_connection(address, timeout=10)
    client.settimeout(10)
    return client


def closed_within(client: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection (recv gives b"") within `seconds`."""
    client.settimeout(seconds)
    try:
        while chunk := client.recv(65536):
            if not chunk:
                break
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def answer(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and (chunk := client.recv(65536)):
        data += chunk
    return data


def good_request(address, photo: Path) -> httpx.Response:
    with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=30) as client:
        return client.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})


def test_a_slow_head_is_closed(address) -> None:
    client = connect(address)
    client.sendall(b"POST /predict HTTP/1.1\r\n")
    started = time.monotonic()
    for _ in range(6):  # one header line a few tenths of a second apart: never a whole head
        time.sleep(0.3)
        try:
            client.sendall(b"X-a: b\r\n")
        except OSError:
            break
    assert closed_within(client, 3 * HEAD_TIMEOUT_S)
    assert time.monotonic() - started < 4 * HEAD_TIMEOUT_S + 2


def test_idle_connections_are_closed_and_do_not_block_good_requests(address, photos) -> None:
    idle = [connect(address) for _ in range(100)]
    assert good_request(address, photos["cat"][0]).status_code == 200
    time.sleep(HEAD_TIMEOUT_S + 0.5)
    assert all(closed_within(client, 2.0) for client in idle)


def test_a_slow_body_gets_408(address) -> None:
    client = connect(address)
    client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n")
    started = time.monotonic()
    reply = b""
    client.settimeout(0.25)
    while time.monotonic() - started < BODY_TIMEOUT_S + 5 and not reply:
        try:
            client.sendall(b"\xff")
            reply = client.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b"--body-timeout" in reply + answer(client)


def test_a_body_cut_off_and_a_huge_head_leave_the_server_answering(address, photos, caplog) -> None:
    caplog.set_level(logging.WARNING)
    cut = connect(address)
    cut.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 9000\r\n\r\n")
    cut.sendall(photos["dog"][0].read_bytes()[:3000])
    cut.close()
    huge = connect(address)
    huge.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
    assert answer(huge).startswith(b"HTTP/1.1 431")
    response = good_request(address, photos["dog"][0])
    assert response.status_code == 200 and response.json()["label"] in ("cat", "dog")
    assert "request failed" not in caplog.text  # a client that left is no crash: no traceback in the log


def test_a_flood_of_oversized_uploads_gets_413_and_good_requests_still_pass(address, photos) -> None:
    big = b"\xff\xd8\xff" + bytes(2 * 2**20)

    def oversized(_index: int) -> int:
        with httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=30) as client:
            return client.post("/predict", content=big, headers={"Content-Type": "image/jpeg"}).status_code

    with ThreadPoolExecutor(16) as pool:
        refused = pool.map(oversized, range(48))
        good = [pool.submit(good_request, address, photos["cat"][i % 3]) for i in range(6)]
        assert set(refused) == {413}
        assert all(future.result().status_code == 200 for future in good)
