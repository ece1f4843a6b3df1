"""``memscope-otel report`` draws a progress line on a terminal (and erases it), and nothing of it
when stderr is not a terminal."""
from __future__ import annotations

import os
import pty
import subprocess

import numpy as np

from .commands import cli_argv, cli_env


def _dump(path, chunks=40, records=2000):
    from memscope_otel.dump import DumpWriter
    from memscope_otel.records import RECORD_DTYPE

    with DumpWriter(path, {}) as writer:
        for i in range(chunks):
            batch = np.zeros(records, dtype=RECORD_DTYPE)
            batch["size"], batch["weight"], batch["site"] = 4096, 1.0, 8
            writer.write_chunk(1_700_000_000_000_000 + i * 1000, batch)
        writer.write_strings({8: "app.py:work:3"})


def test_progress_on_a_terminal_only(tmp_path):
    path = tmp_path / "app.msdump"
    _dump(path)
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(cli_argv("report", str(path)), env=cli_env(), stdout=subprocess.PIPE,
                                stderr=follower, timeout=120)
        os.close(follower)
        follower = None
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower is not None:
            os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    text = drawn.decode()
    assert f"memscope-otel report: {path}: 100.0% (80,000 of 80,000 records)" in text, text
    assert text.endswith("\r") and text.rstrip("\r").endswith(" ")  # erased: blanks over it
    assert b"\r" not in result.stdout and b"app.py:work:3" in result.stdout

    piped = subprocess.run(cli_argv("report", str(path)), env=cli_env(), capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stderr == b"" and piped.stdout == result.stdout
