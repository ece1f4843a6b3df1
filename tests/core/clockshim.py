"""Builds clockshim.c (a preloaded clock_gettime that lets a test move a child process's clocks)
and runs Python code in a child process with it preloaded."""
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def build(directory):
    """The shared object, compiled into directory."""
    out = pathlib.Path(directory) / "clockshim.so"
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror",
                    "-O1", str(HERE / "clockshim.c"), "-o", str(out), "-ldl"], check=True)
    return out


def run_child(shim, code):
    """Runs code in a child interpreter with the shim preloaded (its path is sys.argv[1] there);
    returns the "key: value" lines it printed as a dict."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [env.get("LD_PRELOAD", ""), str(shim)]))  # after ASan's
    result = subprocess.run([sys.executable, "-c", code, str(shim)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())
