"""The page in a real browser (headless Debian chromium through Playwright) against a real uvicorn
server on a loopback port: choose or drop a photo and see the right label, its probability bars and
the Grad-CAM overlay; a text file gets a clear message; a phone-sized screen needs no sideways
scrolling; class names from the server are shown as text, never interpreted as HTML."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from imgcls.serve import create_app

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
WAIT_MS = 30_000  # a shared 2-core machine can be slow; the page itself answers in well under a second


@pytest.fixture(scope="module")
def server_url(served_run: Path, serve_in_thread):
    """`imgcls serve`'s app on uvicorn in a thread."""
    with serve_in_thread(create_app(served_run, max_upload_mb=2)) as (host, port):
        yield f"http://{host}:{port}/"


# Waits use locators and `expect`, never string predicates: the page's Content-Security-Policy forbids eval.
def open_page(page, url: str):
    page.goto(url)
    expect(page.locator("#subtitle")).to_contain_text("classes", timeout=WAIT_MS)
    return page


def shows_label(page, label: str) -> None:
    expect(page.locator("#verdict")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#label")).to_have_text(label)


def shows_overlay(page, size: int) -> None:
    expect(page.locator("#overlay")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#overlay")).to_have_js_property("naturalWidth", size, timeout=WAIT_MS)


def test_choosing_a_photo_shows_label_bars_and_overlay(page, server_url, photos, tmp_path):
    open_page(page, server_url)
    assert page.text_content("#title") == "transfer"
    page.set_input_files("#file", str(photos["cat"][0]))
    shows_label(page, "cat")
    assert page.locator("#bars li").count() == 2
    assert page.text_content("#bars li.top .name") == "cat"
    top = float(page.get_attribute("#bars li.top .track", "aria-valuenow"))
    assert top > 50
    shows_overlay(page, 160)  # the model's input size
    assert page.locator("#photo").evaluate("img => img.naturalWidth") > 160  # the photo itself, full size
    assert not page.is_visible("#error")
    page.screenshot(path=str(tmp_path / "page-cat.png"), full_page=True)
    page.set_input_files("#file", str(photos["dog"][0]))  # a second photo replaces the first answer
    expect(page.locator("#label")).to_have_text("dog", timeout=WAIT_MS)
    assert page.problems == []


def test_dropping_a_photo_classifies_it(page, server_url, photos):
    open_page(page, server_url)
    data = list(photos["dog"][1].read_bytes())
    transfer = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
            return transfer;
        }""",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    shows_label(page, "dog")
    assert page.text_content("#photo-caption") == "dropped.jpg"
    assert page.problems == []


def test_a_text_file_gets_a_clear_message(page, server_url, photos, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo at all\n")
    open_page(page, server_url)
    page.set_input_files("#file", str(photos["cat"][1]))
    shows_label(page, "cat")
    page.set_input_files("#file", str(notes))
    expect(page.locator("#error")).to_be_visible(timeout=WAIT_MS)
    message = page.text_content("#error")
    assert "notes.txt" in message and "not an image" in message
    assert not page.is_visible("#result")  # the previous answer is gone, not shown beside the error
    page.screenshot(path=str(tmp_path / "page-error.png"), full_page=True)
    # the browser logs the refused upload itself (HTTP 415); nothing else may go wrong
    assert all("415" in problem for problem in page.problems), page.problems


def test_phone_sized_screen(browser, server_url, photos, tmp_path):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        open_page(page, server_url)
        page.set_input_files("#file", str(photos["dog"][2]))
        shows_label(page, "dog")
        shows_overlay(page, 160)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width}px wide on a 375px screen"
        for selector in ("#drop", "#label", "#bars", "#photo", "#overlay"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, (selector, box)
        page.screenshot(path=str(tmp_path / "page-phone.png"), full_page=True)
    finally:
        context.close()


def test_class_names_are_shown_as_text(page, server_url, photos):
    """A class name is user data (a folder name): markup in it must appear literally, never run."""
    evil = '<img src=x onerror="window.pwned=1">'
    page.route(
        "**/model",
        lambda route: route.fulfill(
            json={
                "run": "<b>run</b>",
                "classes": [evil, "ok"],
                "architecture": "x",
                "image_size": 160,
                "explain": False,
                "max_upload_mb": 2,
            },
        ),
    )
    answer = {
        "label": evil,
        "probability": 0.9,
        "class_index": 0,
        "probabilities": {evil: 0.9, "ok": 0.1},
        "time_ms": 1.0,
        "timing": {},
    }
    page.route("**/predict*", lambda route: route.fulfill(body=json.dumps(answer), content_type="application/json"))
    open_page(page, server_url)
    page.set_input_files("#file", str(photos["cat"][0]))
    shows_label(page, evil)
    assert page.text_content("#title") == "<b>run</b>"
    assert page.locator("#bars li .name").first.text_content() == evil
    assert page.locator("main img").count() == 2  # only the page's own photo and overlay elements
    assert page.evaluate("window.pwned") is None
    assert page.is_disabled("#explain")


def test_oversized_upload_is_refused_by_the_real_server(server_url, photos):
    big = photos["cat"][0].read_bytes() * 200  # several MiB, over this server's 2 MiB limit
    try:
        response = httpx.post(server_url + "predict", content=big, headers={"content-type": "image/jpeg"}, timeout=30)
    except (httpx.RemoteProtocolError, httpx.WriteError):
        # The server answers 413 from Content-Length and closes without reading the body; a client still
        # sending can see that close (TCP reset) before the 413 it was sent. Either way nothing was read.
        pass
    else:
        assert response.status_code == 413 and "limit" in response.json()["error"]
    assert httpx.get(server_url + "health", timeout=30).json()["status"] == "ok"
