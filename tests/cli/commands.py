"""Running the ``memscope-otel`` command line the way a user does, for the tests of tests/cli."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROGRAMS = Path(__file__).parent / "programs"


def cli_argv(*args: str) -> list:
    """``memscope-otel ARGS`` with the test interpreter (its installed package)."""
    return [sys.executable, "-m", "memscope_otel.cli", *args]


def cli_env(**overrides: str) -> dict:
    """The environment without the caller's OTEL_* settings; quick readings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(overrides)
    return env


def run_cli(*args: str, cwd=PROGRAMS, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    """Runs ``memscope-otel ARGS`` to its end; stdout and stderr are captured as bytes."""
    return subprocess.run(cli_argv(*args), cwd=cwd, env=cli_env(**env), capture_output=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The stderr of a command that must fail with exactly one line and no traceback."""
    err = result.stderr.decode()
    assert result.returncode != 0, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()
