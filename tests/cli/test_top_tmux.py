"""``memscope-otel top`` in a real terminal (tmux): against a program it runs and against the demo's
/metrics page, the screen shows the known sites and numbers that change between refreshes, and
``q`` leaves cleanly. Without tmux these tests skip (fail under MEMSCOPE_REQUIRE_INTEGRATION=1)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from integration.conftest import unavailable
from integration.instrumented import REPO, base_env
from integration.prometheus_server import free_port

from .commands import PROGRAMS, cli_argv, cli_env
from .tmux import TmuxPane

pytestmark = pytest.mark.integration


def _total_row(screen: str) -> str:
    rows = [line for line in screen.splitlines() if line.strip().startswith("total ")]
    assert rows, screen
    return rows[0]


def _watch_and_quit(pane: TmuxPane, site: str) -> str:
    """Waits for ``site`` and rates on the screen, checks that the numbers change between two
    refreshes, then presses q; returns the first screen."""
    first = pane.wait_for_screen(lambda s: site in s and "/s" in s and "top sites by bytes/s" in s
                                 and "…" not in _total_row(s))
    second = pane.wait_for_screen(lambda s: _total_row(s) != _total_row(first), timeout=10)
    assert site in second
    pane.send_keys("q")
    status = pane.wait_for_status()
    assert status == 0, f"top did not leave on q (status {status}): {pane.stderr()}\n{pane.screen()}"
    assert "Traceback" not in pane.stderr() and "Traceback" not in pane.screen(), pane.stderr()
    return first


def test_top_of_a_program():
    pytest.importorskip("memscope_otel._memscope")
    pane = TmuxPane(cli_argv("top", "--", str(PROGRAMS / "steady_loop.py"), "120"), PROGRAMS, cli_env())
    try:
        screen = _watch_and_quit(pane, "steady_loop.py:build_frames")
        assert re.search(r"^  obj\s+\S+ k/s", screen, re.M), screen
        assert "sampling   small 0.001" in screen and "tracker    memory" in screen
        pid = int(re.search(r"pid (\d+):", screen).group(1))
        with pytest.raises(ProcessLookupError):  # q ended the program too
            os.kill(pid, 0)
    finally:
        pane.close()


def _wait_for_page(url: str, timeout=60.0):
    from memscope_otel.prometheus_reading import PageError, read_url

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_url(url)
        except PageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_top_of_the_demo_metrics_page():
    pytest.importorskip("memscope_otel._memscope")
    if not os.path.exists(os.path.join(sys.prefix, "bin", "opentelemetry-instrument")):
        unavailable("opentelemetry-instrument is not installed in the test environment (the test extra has it)")
    port = free_port()
    demo = subprocess.Popen(["bash", str(REPO / "scripts" / "demo.sh")], cwd=REPO,
                            env=base_env(MEMSCOPE_DEMO_VENV=sys.prefix, MEMSCOPE_DEMO_INSTALL="0",
                                         MEMSCOPE_DEMO_SECONDS="120", MEMSCOPE_DEMO_PORT=str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pane = None
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        _wait_for_page(url)
        pane = TmuxPane(cli_argv("top", "--url", url), PROGRAMS, cli_env())
        screen = _watch_and_quit(pane, "demo_app.py:")
        assert re.search(r"demo_app\.py:(parse_request|render_response|build_report|Cache\.put)", screen), screen
    finally:
        if pane is not None:
            pane.close()
        demo.send_signal(signal.SIGTERM)
        try:
            demo.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.communicate()


def test_ctrl_c_leaves_the_view_of_a_page():
    from .pages import PageServer, growing_memscope_page

    with PageServer(growing_memscope_page()) as server:
        pane = TmuxPane(cli_argv("top", "--url", server.url, "--interval", "0.5"), PROGRAMS, cli_env())
        try:
            pane.wait_for_screen(lambda s: "worker.py:grow_buffers:12 (obj)" in s and "MiB/s" in s)
            pane.send_keys("C-c")
            status = pane.wait_for_status()
            assert status == 0, f"top did not leave on Ctrl-C (status {status}): {pane.stderr()}"
            assert pane.stderr() == "" and "q quits" not in pane.screen()  # the terminal is restored
        finally:
            pane.close()
