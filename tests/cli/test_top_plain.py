"""``memscope-otel top`` when stdout is not a terminal: one plain line per interval, from a program
it runs or from a /metrics page; bad input is a one-line error."""
from __future__ import annotations

import re
import socket

import pytest

from .commands import PROGRAMS, one_line_error, run_cli
from .pages import PageServer, growing_memscope_page

LINE = re.compile(r"^\d\d:\d\d:\d\d ")


def test_program_lines_until_it_ends_and_its_exit_status():
    pytest.importorskip("memscope_otel._memscope")
    result = run_cli("top", "--", str(PROGRAMS / "steady_loop.py"), "3.5")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert "steady_loop: " in out and " rounds" in out  # the program's own stdout
    lines = [line for line in out.splitlines() if LINE.match(line)]
    assert len(lines) >= 3, out
    assert "rates from the next line on" in lines[0]
    rated = [line for line in lines[1:] if "allocs/s" in line]
    assert len(rated) >= 2, out
    assert any("steady_loop.py:build_frames" in line for line in rated), out
    rates = {re.search(r"allocs/s (\S+ ?k?) ", line).group(1) for line in rated}
    assert rates != {"0"}, out


def test_program_that_ends_at_once_gives_its_final_line_and_exit_status():
    pytest.importorskip("memscope_otel._memscope")
    result = run_cli("top", "--", str(PROGRAMS / "known_sites.py"), "3")
    out = result.stdout.decode("utf-8", "replace")  # (the program's last line has no newline)
    assert result.returncode == 3, result.stderr.decode()[-3000:]
    lines = re.findall(r"\d\d:\d\d:\d\d allocations .*", out)
    assert len(lines) == 1 and "rates from the next line on" in lines[0], out  # from its final reading


def test_url_lines_with_rates_and_the_site_of_the_page():
    with PageServer(growing_memscope_page()) as server:
        result = run_cli("top", "--url", server.url, "--interval", "0.5", "-n", "3")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    lines = out.splitlines()
    assert len(lines) == 3 and all(LINE.match(line) for line in lines), out
    for line in lines[1:]:
        # 1000 allocations of 64 KiB per request, a request every half second: 2 k/s, over the
        # time between two requests as top measured it (a late request on a busy machine makes
        # the next gap shorter: seen 2.2 k/s; the bound allows gaps of 0.25 to 1 s)
        allocs = float(re.search(r"allocs/s (\S+) k", line).group(1))
        assert 1.0 <= allocs <= 4.0, line
        assert "worker.py:grow_buffers:12 (obj)" in line and "MiB/s" in line, line


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_url_is_one_line_error():
    line = one_line_error(run_cli("top", "--url", f"http://127.0.0.1:{_free_port()}/metrics", "-n", "1"))
    assert line.startswith("memscope-otel top: error: cannot reach http://127.0.0.1:") and "refused" in line


@pytest.mark.parametrize("page", ["# TYPE up gauge\nup 1\n", "<html><body><h1>Hello</h1></body></html>"])
def test_page_without_memscope_metrics_is_one_line_error(page):
    with PageServer(lambda: page) as server:
        line = one_line_error(run_cli("top", "--url", server.url, "-n", "1"))
    assert line.startswith("memscope-otel top: error: ")
    assert "no memscope metrics" in line or "not a Prometheus metrics page" in line


@pytest.mark.parametrize("args, message", [
    (["--", "missing_program.py"], "no such file: missing_program.py"),
    (["--", "-m", "no_such_module_xyz"], "no module named 'no_such_module_xyz'"),
    ([], "give a program to run"),
    (["--url", "http://127.0.0.1:1/metrics", "--", "x.py"], "not both"),
    (["--url", "not-a-url"], "cannot read not-a-url"),
])
def test_bad_input_is_one_line_error(args, message):
    line = one_line_error(run_cli("top", *args))
    assert line.startswith("memscope-otel top: error: ") and message in line


def test_a_page_that_stops_answering_is_reported_once_per_interval():
    import time

    growing = growing_memscope_page()
    served = [0]

    def page():
        served[0] += 1
        if served[0] > 2:
            raise ConnectionError("the process behind the page went away")  # the connection drops
        return growing()

    with PageServer(page) as server:
        started = time.monotonic()
        result = run_cli("top", "--url", server.url, "--interval", "0.5", "-n", "5")
        elapsed = time.monotonic() - started
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0, result.stderr.decode()
    assert len(lines) == 5 and "allocs/s" in lines[1], lines
    assert all(f"cannot read {server.url}" in line for line in lines[2:]), lines
    assert elapsed >= 4 * 0.5 * 0.9, elapsed  # paced: not a burst of refusals
