"""The dump file failing under a running tracker: a full disk, or the file deleted. memscope stops
writing it with one warning (not one error per drain: on a full disk the log is part of the
problem), the chunks written so far stay readable, and the application carries on."""
import os
import subprocess
import sys
import textwrap

from memscope_otel.dump import open_dump

CHILD = textwrap.dedent("""
    import logging, os, resource, sys, time

    warnings = []
    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())
    logging.getLogger("memscope_otel").addHandler(Keep())

    import memscope_otel

    path, how = sys.argv[1], sys.argv[2]
    tracker = memscope_otel.start(dump_path=path, drain_interval_ms=20, adaptive=False)
    if how == "full":  # as a full disk: writes past the limit fail (EFBIG; CPython ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 50_000, resource.RLIM_INFINITY))
    else:
        os.unlink(path)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        junk = [bytearray(10_000) for _ in range(100)]  # large: sampled, hundreds of records a drain
        time.sleep(0.005)
    still_open = any("(deleted)" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                     if os.path.islink(f"/proc/self/fd/{fd}"))
    memscope_otel.stop()
    print("warnings:", len(warnings), flush=True)
    print("deleted file still open:", still_open, flush=True)
    for w in warnings:
        print("warning:", w, flush=True)
""")


def run(tmp_path, how):
    path = tmp_path / "failing.dump"
    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), how], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout, path


def test_a_full_disk_stops_the_dump_with_one_warning(tmp_path):
    out, path = run(tmp_path, "full")
    assert "warnings: 1\n" in out, out
    assert "stopped writing its dump" in out and "OTEL_PYTHON_MEMSCOPE_DUMP_PATH" in out
    with open_dump(str(path), strict=True) as dump:  # every chunk written before is whole
        assert dump.truncated is None
        assert dump.n_records > 0


def test_a_deleted_dump_is_closed_with_one_warning(tmp_path):
    out, _ = run(tmp_path, "deleted")
    assert "warnings: 1\n" in out, out
    assert "deleted" in out.split("warning:", 1)[1]
    assert "deleted file still open: False" in out
