"""End to end in a real browser: the Streamlit server as a subprocess, driven by headless Chromium
(Debian's `chromium` through Playwright), and `debate ui` stopped by a signal. Slow; the browser tests
skip when Chromium or Playwright is missing."""

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

from judges.human_queue import HumanQueue
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


def _start_ui(results: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """The real verb, `debate ui`, on a free loopback port, in a process group of its own."""
    port = _free_port()
    cmd = [sys.executable, "-m", "ui.cli", "ui", "--port", str(port), "--host", "127.0.0.1", "--results", str(results)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def _stop_group(proc: subprocess.Popen) -> None:
    """End whatever is left of the process group (an orphaned server too), also when a test failed half-way."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + 20
        while time.time() < deadline:
            proc.poll()  # reap the verb itself, so that only live members keep the group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server(tmp_path):
    """A running app on a free loopback port over a filled store; stopped at the end, also on failure."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    pytest.importorskip("playwright.sync_api")
    results = tmp_path / "results"
    store, queue, tokens = make_store(results, n=1)
    log = tmp_path / "streamlit.log"
    proc, port = _start_ui(results, log)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, proc, log)
        yield url, store, tokens
    finally:
        _stop_group(proc)


def test_sigterm_to_debate_ui_leaves_nothing_listening(tmp_path):
    """A process manager stops `debate ui` with SIGTERM to its pid: the server must go with it."""
    results = tmp_path / "results"
    make_store(results, n=1)
    log = tmp_path / "streamlit.log"
    proc, port = _start_ui(results, log)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", proc, log)
        assert _listening(port)
        os.kill(proc.pid, signal.SIGTERM)  # the verb's pid only, as `kill PID` or systemd would
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while _listening(port) and time.time() < deadline:
            time.sleep(0.2)
        assert not _listening(port), f"port {port} still listening after SIGTERM:\n{log.read_text()}"
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing of its process group is left
    finally:
        _stop_group(proc)


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


# the admin pages' titles and paths
ADMIN_WORDS = (b"Leaderboard", b"leaderboard", b"Accuracy", b"accuracy", b"Agreement", b"agreement", b"Queue", b"queue",
               b"Transcripts", b"transcripts")


def _record_frames(page) -> list[bytes]:
    """Every websocket frame the browser receives from now on (Streamlit's protobuf messages)."""
    frames: list[bytes] = []

    def on_socket(ws) -> None:
        ws.on("framereceived", lambda data: frames.append(data if isinstance(data, bytes) else data.encode("utf-8")))

    page.on("websocket", on_socket)
    return frames


def test_judge_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, store, tokens = server
    queue = HumanQueue(store)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context().new_page()
            page.set_default_timeout(WAIT_MS)
            frames = _record_frames(page)
            # a visitor sees the login page and receives no admin page name or path
            page.goto(url)
            page.get_by_label("Access token", exact=True).wait_for(timeout=WAIT_MS)
            visitor = b"".join(frames)
            assert b"Access token" in visitor  # the frames are readable
            assert not [w for w in ADMIN_WORDS if w in visitor], [w for w in ADMIN_WORDS if w in visitor]
            # a wrong token is refused
            _login(page, url, "not-a-token")
            expect(page.get_by_text("That access token is wrong or has been revoked.")).to_be_visible(timeout=WAIT_MS)
            # the judge logs in and sees the first turn only
            _login(page, url, tokens["alice"])
            expect(page.get_by_text("Turn 1 of 2")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Debater for A").first).to_be_visible(timeout=WAIT_MS)
            html = page.content()
            assert "ZEBRAPASSAGE" not in html and "honest-entry" not in html and "Turn two" not in html
            (slot,) = [queue.slot(i) for (i,) in store._conn().execute("SELECT id FROM slots").fetchall()]
            sent = b"".join(frames)
            for secret in (slot.id, RUN, slot.transcript_id, slot.lease):
                assert secret not in html and secret.encode() not in sent, secret
            assert not [w for w in ADMIN_WORDS if w in sent]
            assert page.locator("span.vq").count() == 1 and page.locator("span.uq").count() == 1
            shot = tmp_path / "judge.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            # belief after turn 1, then the second turn appears
            _set_slider(page, 70)
            page.get_by_role("button", name="Give belief and see the next turn").click()
            expect(page.get_by_text("Turn 2 of 2")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Your belief after turn 1: 70%")).to_be_visible(timeout=WAIT_MS)
            # the final verdict; the reason's limit is beside the field and a long reason is refused, not cut
            _set_slider(page, 80)
            reason = page.get_by_role("textbox", name="Your reason (a sentence or two, at most 2,000 characters)")
            expect(page.get_by_text("0 of at most 2,000 characters")).to_be_visible(timeout=WAIT_MS)
            reason.fill("x" * 2100)  # what a paste puts in the field: all of it, nothing silently dropped
            page.get_by_role("button", name="Submit verdict").click()
            expect(page.get_by_text("Your reason is 2,100 characters long; the limit is 2,000.")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("100 over the limit")).to_be_visible(timeout=WAIT_MS)
            expect(reason).to_have_value("x" * 2100)
            assert not store.verdicts(RUN)
            reason.fill("the cellar quote was verified")
            page.get_by_role("button", name="Submit verdict").click()
            expect(page.get_by_text("Your verdict is stored")).to_be_visible(timeout=WAIT_MS)
            verdicts = []
            deadline = time.time() + 30
            while not verdicts and time.time() < deadline:
                verdicts = store.verdicts(RUN)
                time.sleep(0.2)
            (v,) = verdicts
            order = slot.order
            assert v.p_answer0 == pytest.approx(view.to_answer0(0.8, order))
            assert v.beliefs == pytest.approx((view.to_answer0(0.7, order),))
            assert json.loads(v.raw)["judge_name"] == "alice"
            assert json.loads(v.raw)["reason"] == "the cellar quote was verified"
            # over the whole session (beliefs, refusals, the verdict and the revealed answer) no id came
            sent, html = b"".join(frames), page.content()
            for secret in (slot.id, RUN, slot.transcript_id, slot.lease):
                assert secret not in html and secret.encode() not in sent, secret
            # a judge cannot open an admin page, even by its address: the app does not know it for them
            other = browser.new_context().new_page()
            other.set_default_timeout(WAIT_MS)
            other_frames = _record_frames(other)
            other.goto(url + "/queue")
            expect(other.get_by_text("Page not found")).to_be_visible(timeout=WAIT_MS)
            other.keyboard.press("Escape")
            field = other.get_by_label("Access token", exact=True)
            field.fill(tokens["alice"])
            other.get_by_role("button", name="Log in").click()
            expect(other.get_by_text("Judge a debate")).to_be_visible(timeout=WAIT_MS)
            assert other.locator("[data-testid=stDataFrame]").count() == 0
            # Streamlit echoes the path the visitor typed (any path, e.g. /zzz, comes back the same), so "queue"
            # is theirs; the app's titles and other paths never come
            assert not [w for w in ADMIN_WORDS if w != b"queue" and w in b"".join(other_frames)]
        finally:
            browser.close()
