"""``memscope-otel run``: the summary names the program's sites, and the program's exit status
(an exit code, or death by a signal) and its output, byte for byte, stay its own."""
from __future__ import annotations

import re
import signal

import pytest

from .commands import PROGRAMS, one_line_error, run_cli

pytest.importorskip("memscope_otel._memscope")

PROGRAM = str(PROGRAMS / "known_sites.py")
STDOUT_BYTES = b"stdout: \x00\xff binary \xe2\x9c\x93\r\nlast line without newline"
STDERR_BYTES = b"stderr: the program's own \xe2\x9c\x93\n"


def _summary(result) -> str:
    assert result.stderr.startswith(STDERR_BYTES), result.stderr[:2000]
    return result.stderr[len(STDERR_BYTES):].decode()


def _site_row(summary: str, title: str, function: str) -> str:
    section = summary.split(title, 1)[1].split("\n\n", 1)[0]
    rows = [line for line in section.splitlines() if f"known_sites.py:{function}" in line]
    assert rows, f"{function} not under {title!r}:\n{summary}"
    return rows[0]


@pytest.mark.parametrize("status", [0, 3])
def test_summary_names_the_sites_and_the_exit_status_is_the_programs(status):
    result = run_cli("run", "--", PROGRAM, str(status))
    assert result.returncode == status, result.stderr.decode()[-3000:]
    assert result.stdout == STDOUT_BYTES  # byte for byte: nothing of ours on stdout
    summary = _summary(result)
    assert summary.startswith(f"memscope-otel run: {PROGRAM} {status}: exit status {status}\n")
    # 200 frames of 64 KiB: large, always sampled with weight 1, so exact (12.5 MiB); live at the
    # end, the frames are the top site by bytes and by live bytes. The 200 bytearray objects of
    # the same line are small, sampled at about 1 in 1,000 (rate and frequency slot, some 0.4
    # samples expected), each sample some 56 KB: up to 7 of them (12.9 MiB; 8 or more has a
    # probability near 0.4**8 / 8! = 2e-8). The list is made once, on another line (a 56-byte
    # object and a 1,600-byte item block: 88 KB at most if sampled into the same row, which
    # leaves room for 6 of those samples; a growing list's reallocs would have been 0.5 MB each).
    frames = _site_row(summary, "Top sites by estimated bytes", "allocate_frames")
    assert re.search(r"\b12\.[5-9] MiB\b", frames), frames
    live = _site_row(summary, "Top sites by live bytes", "allocate_frames")
    assert re.search(r"\b12\.[5-9] MiB\b", live), live
    _site_row(summary, "Top sites by estimated bytes", "churn_strings")
    # the exact totals count at least the 200 large frames, and the histogram has their bucket
    totals = summary.split("Allocations (exact)", 1)[1].split("\n\n", 1)[0]
    # (which domain: bytearray's buffer is PyObject_Malloc'd before 3.13, PyMem_Malloc'd since)
    assert sum(int(n) for n in re.findall(r"\blarge\s+(\d+)\s", totals)) >= 200, totals
    histogram = summary.split("Size distribution (exact allocations per power-of-two size)", 1)[1]
    assert re.search(r"<= 128 KiB\s+2\d\d\n", histogram), histogram  # bytearray(65536) asks 65537 B
    assert "The tracker's own cost" in summary and "0 dropped" in summary


def test_what_the_program_keeps_in_globals_is_live_at_the_end_after_a_collection_at_exit():
    """Run as `python program.py`, a program's globals outlive every exit handler; under `run`
    they must too, even when a garbage collection comes between the exit and the final reading
    (runpy's namespace is a cycle that a collection frees). Seen on 3.10 in a full test run: the
    frames' site with no live bytes and no qualified name."""
    result = run_cli("run", "--", PROGRAM, "0", "--gc-at-exit")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = _summary(result)
    live = _site_row(summary, "Top sites by live bytes", "allocate_frames")
    assert re.search(r"\b12\.[5-9] MiB\b", live), live  # (the bound of the test above)


def test_death_by_signal_is_passed_on_and_the_last_periodic_reading_summarized():
    result = run_cli("run", "--", PROGRAM, "0", "--signal", "SIGTERM")
    assert result.returncode == -signal.SIGTERM, result.stderr.decode()[-3000:]
    assert result.stdout == STDOUT_BYTES
    summary = _summary(result)
    assert "killed by SIGTERM" in summary.splitlines()[0]
    assert "without a final reading" in summary
    _site_row(summary, "Top sites by estimated bytes", "allocate_frames")


def test_uncaught_exception_exits_1_with_the_programs_traceback():
    result = run_cli("run", "--", PROGRAM, "0", "--crash")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "RuntimeError: the program's own uncaught error" in err
    assert err.index("RuntimeError") < err.index("memscope-otel run:")  # the summary comes after
    _site_row(err, "Top sites by estimated bytes", "allocate_frames")


def test_module_mode_runs_like_python_dash_m(tmp_path):
    result = run_cli("run", "--top", "3", "--", "-m", "known_sites", "0", cwd=PROGRAMS)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout == STDOUT_BYTES
    summary = _summary(result)
    assert summary.startswith("memscope-otel run: -m known_sites 0: exit status 0")
    _site_row(summary, "Top sites by estimated bytes", "allocate_frames")
    table = summary.split("Top sites by estimated bytes", 1)[1].split("\n\n", 1)[0]
    assert len(table.strip().splitlines()) == 1 + 3  # --top 3: a header and three rows


def test_html_page_is_written_at_exit(tmp_path):
    page = tmp_path / "run.html"
    result = run_cli("run", "--html", str(page), "--", PROGRAM, "0")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout == STDOUT_BYTES
    assert f"HTML report written to {page}" in result.stderr.decode()
    html = page.read_text()
    assert "known_sites.py:allocate_frames" in html and html.count("<svg") >= 3
    assert "exit status 0" in html and "<script" not in html


def test_no_summary_leaves_stderr_to_the_program():
    result = run_cli("run", "--no-summary", "--", PROGRAM, "0")
    assert (result.returncode, result.stdout, result.stderr) == (0, STDOUT_BYTES, STDERR_BYTES)


def test_disabled_tracker_runs_the_program_untracked():
    result = run_cli("run", "--", PROGRAM, "0", OTEL_PYTHON_MEMSCOPE_ENABLED="false")
    assert result.returncode == 0 and result.stdout == STDOUT_BYTES
    assert "no reading arrived from the program" in _summary(result)


@pytest.mark.parametrize("args, message", [
    (["--", "no_such_program.py"], "no such file: no_such_program.py"),
    (["--", "-m", "no_such_module_xyz"], "no module named 'no_such_module_xyz'"),
    (["--", "-m"], "-m needs a module name"),
    ([], "give a program to run"),
])
def test_bad_program_is_one_line_error(args, message):
    result = run_cli("run", *args)
    line = one_line_error(result)
    assert line.startswith("memscope-otel run: error: ") and message in line
    assert result.stdout == b""


def test_sigterm_to_run_is_passed_on_to_the_program():
    import subprocess
    import time

    from .commands import cli_argv, cli_env

    process = subprocess.Popen(cli_argv("run", "--", str(PROGRAMS / "steady_loop.py"), "120"), cwd=PROGRAMS,
                               env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # A reading or two: readings come every second once the program's interpreter has started
        # (1-2 s on an idle machine, both interpreters' imports), so the wait counts from the
        # program's own start, with room for a loaded machine.
        deadline = time.monotonic() + 30.0
        while not _children(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(5.0)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGTERM, err.decode()[-3000:]
    summary = err.decode()
    assert "killed by SIGTERM" in summary.splitlines()[0], summary
    assert "steady_loop.py:build_frames" in summary and out == b""


def _children(pid):
    """The pids whose parent is ``pid`` (from /proc)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # (a process that just ended)
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
