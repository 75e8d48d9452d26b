"""End to end in a real browser: the Streamlit server as a subprocess, driven by headless Chromium
(Debian's `chromium` through Playwright). Slow; skipped when Chromium or Playwright is missing."""

from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_ui_app import RUN, make_store
from ui import view

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture
def server(tmp_path):
    """A running app on a free loopback port over a filled store; stopped at the end, also on failure."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    pytest.importorskip("playwright.sync_api")
    results = tmp_path / "results"
    store, queue, tokens = make_store(results, n=1)
    port = _free_port()
    log = tmp_path / "streamlit.log"
    # the real verb: `debate ui` on a free loopback port (it runs Streamlit as its child)
    cmd = [sys.executable, "-m", "ui.cli", "ui", "--port", str(port), "--host", "127.0.0.1", "--results", str(results)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, proc, log)
        yield url, store, tokens
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the verb and its Streamlit child
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _login(page, url: str, token: str) -> None:
    page.goto(url)
    field = page.get_by_label("Access token", exact=True)
    field.wait_for(timeout=WAIT_MS)
    field.fill(token)
    page.get_by_role("button", name="Log in").click()


def _set_slider(page, value: int) -> None:
    """Move the page's only slider from 50 to `value` with the keyboard."""
    from playwright.sync_api import expect

    thumb = page.get_by_role("slider")
    thumb.wait_for(timeout=WAIT_MS)
    thumb.focus()
    key = "ArrowRight" if value > 50 else "ArrowLeft"
    for _ in range(abs(value - 50)):
        page.keyboard.press(key)
    expect(thumb).to_have_value(str(value), timeout=WAIT_MS)


def test_judge_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, store, tokens = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(WAIT_MS)
            # a wrong token is refused
            _login(page, url, "not-a-token")
            expect(page.get_by_text("That access token is wrong or has been revoked.")).to_be_visible(timeout=WAIT_MS)
            # the judge logs in and sees the first turn only
            _login(page, url, tokens["alice"])
            expect(page.get_by_text("Turn 1 of 2")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Debater for A").first).to_be_visible(timeout=WAIT_MS)
            html = page.content()
            assert "ZEBRAPASSAGE" not in html and "honest-entry" not in html and "Turn two" not in html
            assert page.locator("span.vq").count() == 1 and page.locator("span.uq").count() == 1
            shot = tmp_path / "judge.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            # belief after turn 1, then the second turn appears
            _set_slider(page, 70)
            page.get_by_role("button", name="Give belief and see the next turn").click()
            expect(page.get_by_text("Turn 2 of 2")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Your belief after turn 1: 70%")).to_be_visible(timeout=WAIT_MS)
            # the final verdict
            _set_slider(page, 80)
            page.get_by_label("Your reason (a sentence or two)").fill("the cellar quote was verified")
            page.get_by_role("button", name="Submit verdict").click()
            expect(page.get_by_text("Your verdict is stored")).to_be_visible(timeout=WAIT_MS)
            verdicts = []
            deadline = time.time() + 30
            while not verdicts and time.time() < deadline:
                verdicts = store.verdicts(RUN)
                time.sleep(0.2)
            (v,) = verdicts
            order = view.shuffle_order(json.loads(v.raw)["slot"])
            assert v.p_answer0 == pytest.approx(view.to_answer0(0.8, order))
            assert v.beliefs == pytest.approx((view.to_answer0(0.7, order),))
            assert json.loads(v.raw)["judge_name"] == "alice"
            # a judge cannot open an admin page, even by its address
            other = browser.new_context().new_page()
            other.set_default_timeout(WAIT_MS)
            _login(other, url + "/queue", tokens["alice"])
            expect(other.get_by_text("Admins only: this page needs an admin token.")).to_be_visible(timeout=WAIT_MS)
            assert other.locator("[data-testid=stDataFrame]").count() == 0
        finally:
            browser.close()
