"""The reducer paths compared from C: natively (with AddressSanitizer and UBSan), and the NEON path
cross-compiled for AArch64 and run under qemu-user when those tools are installed."""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [str(ROOT / "tests" / "reduce" / "reduce_paths_check.c"), str(ROOT / "csrc" / "reduce.c")]
FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", f"-I{ROOT / 'csrc'}"]


def build_and_run(compiler, extra, tmp_path, runner=()):
    exe = tmp_path / "check"
    subprocess.run([compiler, *FLAGS, *extra, *SOURCES, "-lm", "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    proc = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_native_paths_identical_under_sanitizers(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    out = build_and_run(compiler, ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                        tmp_path)
    assert out.startswith("ok ")


def test_neon_path_identical_under_qemu(tmp_path):
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if cross is None or qemu is None:
        if os.environ.get("MEMSCOPE_REQUIRE_INTEGRATION") == "1" and os.environ.get("MEMSCOPE_REQUIRE_NEON") == "1":
            pytest.fail("MEMSCOPE_REQUIRE_NEON=1 but gcc-aarch64-linux-gnu or qemu-user is missing")
        pytest.skip("needs gcc-aarch64-linux-gnu and qemu-user (Debian packages) to run the NEON path")
    out = build_and_run(cross, ["-O2", "-static"], tmp_path, runner=[qemu])
    assert out.startswith("ok ") and out.strip().endswith("simd=1"), out
