"""The dump file as something other local users can reach (DESIGN.md, known trap 12).

A dump holds raw heap addresses, and its path is often in a shared directory where another user can
plant a symbolic link or a file of their own. memscope creates the file 0600 whatever the umask,
never writes through a symbolic link at the path, never truncates a file it does not own (not even
as root), a hard-linked one or anything but a regular file, and creates a forked child's
``<path>.<pid>`` only where nothing is yet. A refused path costs one warning naming
OTEL_PYTHON_MEMSCOPE_DUMP_PATH and the reason; tracking and metrics go on.

The tests run as root (here and in CI): "another user" is a file chowned to uid 65534 (nobody).
"""
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from memscope_otel.dump import DumpWriter, open_dump

NOBODY = 65534
VICTIM_TEXT = b"another user's data, which must survive\n"


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def victim(tmp_path, name="victim.txt", owner=None):
    path = tmp_path / name
    path.write_bytes(VICTIM_TEXT)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def assert_untouched(path, owner=None):
    assert path.read_bytes() == VICTIM_TEXT
    if owner is not None:
        assert os.lstat(path).st_uid == owner


@pytest.fixture
def umask():
    """``os.umask`` for one test: the process's own umask is put back after it."""
    saved = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(saved)


# ------------------------------------------------------------------------------------ DumpWriter


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
def test_a_new_dump_is_0600_whatever_the_umask(tmp_path, umask, mask):
    # Only the last component is the dump's own: a directory reached through a link is the
    # administrator's choice (e.g. /var/log -> /data/log) and is followed.
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    path = tmp_path / "via" / "new.msdump"
    umask(mask)
    with DumpWriter(path, {"k": 1}) as w:
        w.write_strings({1: "site"})
    assert mode_of(path) == 0o600
    assert open_dump(path).strings == {1: "site"}


def test_an_own_old_dump_is_truncated_and_made_0600(tmp_path):
    path = victim(tmp_path, "old.msdump")
    os.chmod(path, 0o644)  # as the writer before this fix left it
    DumpWriter(path, {"new": True}).close()
    assert mode_of(path) == 0o600
    assert open_dump(path).config == {"new": True}  # the old bytes are gone, not kept in front


def test_a_symlink_to_a_file_is_refused(tmp_path):
    target = victim(tmp_path, owner=NOBODY)
    link = tmp_path / "link.msdump"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        DumpWriter(link, {})
    assert_untouched(target, NOBODY)
    assert link.is_symlink()


def test_a_dangling_symlink_is_refused_and_creates_nothing(tmp_path):
    target = tmp_path / "would-be-created"
    link = tmp_path / "link.msdump"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        DumpWriter(link, {})
    assert not os.path.lexists(target)


def test_another_users_file_is_refused_even_as_root(tmp_path):
    path = victim(tmp_path, "foreign.msdump", owner=NOBODY)
    os.chmod(path, 0o666)  # writable by anyone: still not ours to truncate
    with pytest.raises(OSError, match=f"another user.*uid {NOBODY}"):
        DumpWriter(path, {})
    assert_untouched(path, NOBODY)
    assert mode_of(path) == 0o666


def test_a_file_with_another_hard_link_is_refused(tmp_path):
    # An own file linked from elsewhere (e.g. the service's config, hard-linked by someone where
    # protected_hardlinks is off): truncating the dump name would empty the other name too.
    original = victim(tmp_path, "config.ini")
    os.link(original, tmp_path / "linked.msdump")
    with pytest.raises(OSError, match="2 hard links"):
        DumpWriter(tmp_path / "linked.msdump", {})
    assert_untouched(original)


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir.msdump").mkdir()
    with pytest.raises(OSError, match=r"not a regular file \(a directory\)"):
        DumpWriter(tmp_path / "dir.msdump", {})


def test_a_device_is_refused():
    # Owned by root like the tests' process: only its kind refuses it.
    before = os.stat("/dev/null")
    with pytest.raises(OSError, match=r"not a regular file \(a character device\)"):
        DumpWriter("/dev/null", {})
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)


class Hung(Exception):
    pass


@pytest.mark.parametrize("reader", [False, True], ids=["no-reader", "with-reader"])
def test_a_fifo_is_refused_without_blocking(tmp_path, reader):
    fifo = tmp_path / "fifo.msdump"
    os.mkfifo(fifo)
    # Without a reader a plain open for writing would wait for one forever; with one it succeeds.
    read_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else -1

    def hung(*_):
        raise Hung("opening the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        with pytest.raises(OSError, match=r"not a regular file \(a FIFO\)"):
            DumpWriter(fifo, {})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    if reader:
        try:
            assert os.read(read_fd, 4096) == b"", "a header went into the FIFO"
        finally:
            os.close(read_fd)


def test_exclusive_creates_a_new_file_0600(tmp_path, umask):
    umask(0)
    path = tmp_path / "child.msdump.1234"
    DumpWriter(path, {}, exclusive=True).close()
    assert mode_of(path) == 0o600
    assert open_dump(path).config == {}


def test_exclusive_refuses_even_an_own_file(tmp_path):
    path = victim(tmp_path, "child.msdump.1234")
    with pytest.raises(OSError, match="already"):
        DumpWriter(path, {}, exclusive=True)
    assert_untouched(path)


# ------------------------------------------------------------------- a tracker with a bad path

SCRIPT = textwrap.dedent("""
    import json, logging, os, sys, time

    path, mode = sys.argv[1], sys.argv[2]
    victim = sys.argv[3] if len(sys.argv) > 3 else None
    NOBODY = 65534
    os.umask(0)  # what the dump's mode must not depend on

    def plant():
        # Registered before memscope is imported, so in a forked child it runs before memscope's
        # own fork handler: whatever it leaves at <path>.<pid> is there when the child's dump opens.
        planted = f"{path}.{os.getpid()}"
        if mode == "fork-symlink":
            os.symlink(victim, planted)
        elif mode in ("fork-own", "fork-foreign"):
            with open(planted, "wb") as f:
                f.write(b"already here\\n")
            if mode == "fork-foreign":
                os.chown(planted, NOBODY, NOBODY)

    os.register_at_fork(after_in_child=plant)

    warnings = []
    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())
    logging.getLogger("memscope_otel").addHandler(Keep())

    import memscope_otel
    from memscope_otel import sampler
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    def metric_total(reader, name):
        total = 0
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        total += sum(p.value for p in metric.data.data_points)
        return total

    def tracking(tracker, reader):
        # Allocations are counted, drains run and a collection reports them. (A forked child's
        # drainer and dump start when first needed: this snapshot is that need.)
        memscope_otel.snapshot()
        before = int(sampler.read_counters().allocations.sum())
        drains = tracker.drainer.drains
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tracker.drainer.drains < drains + 3:
            junk = [bytearray(10_000) for _ in range(100)]
            time.sleep(0.005)
        return {"counted": int(sampler.read_counters().allocations.sum()) - before,
                "drains": tracker.drainer.drains - drains,
                "exported": metric_total(reader, "memscope.allocations")}

    reader = InMemoryMetricReader()
    tracker = memscope_otel.start(meter_provider=MeterProvider(metric_readers=[reader]),
                                  dump_path=path, drain_interval_ms=20, adaptive=False)
    report = {"warnings": warnings}
    if mode == "stopped":  # the parent's dump stops on a full disk before the fork
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path) + 50_000, resource.RLIM_INFINITY))
        deadline = time.monotonic() + 10
        while not warnings and time.monotonic() < deadline:
            junk = [bytearray(10_000) for _ in range(100)]
            time.sleep(0.005)
        with open(path, "rb") as f:
            report["parent_dump_at_fork"] = f.read().hex()
    if mode.startswith("fork") or mode == "stopped":
        warned_before_fork = len(warnings)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child = {"pid": os.getpid(), "tracking": tracking(tracker, reader)}
                child["warnings"] = warnings[warned_before_fork:]
                os.write(write_end, json.dumps(child).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        data = b""
        while chunk := os.read(read_end, 65536):
            data += chunk
        _, status = os.waitpid(pid, 0)
        report["child"] = json.loads(data) if data else None
        report["child_status"] = status
    report["tracking"] = tracking(tracker, reader)
    memscope_otel.stop()
    print(json.dumps(report), flush=True)
""")


def run_tracked(path, mode, victim_path=None):
    env = dict(os.environ)
    env.pop("OTEL_SDK_DISABLED", None)
    args = [sys.executable, "-c", SCRIPT, str(path), mode] + ([str(victim_path)] if victim_path else [])
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_tracking(report):
    assert report["counted"] > 0 and report["drains"] >= 3 and report["exported"] > 0, report


def assert_one_refusal(warnings, reason):
    assert len(warnings) == 1, warnings
    assert "OTEL_PYTHON_MEMSCOPE_DUMP_PATH" in warnings[0] and reason in warnings[0], warnings


def test_a_tracker_creates_its_dump_0600(tmp_path):
    path = tmp_path / "app.msdump"
    report = run_tracked(path, "plain")
    assert report["warnings"] == []
    assert_tracking(report["tracking"])
    assert mode_of(path) == 0o600
    assert open_dump(path).n_records > 0


def test_a_tracker_refuses_a_symlinked_path_and_keeps_tracking(tmp_path):
    target = victim(tmp_path, owner=NOBODY)
    path = tmp_path / "app.msdump"
    path.symlink_to(target)
    report = run_tracked(path, "plain")
    assert_one_refusal(report["warnings"], "symbolic link")
    assert_tracking(report["tracking"])
    assert_untouched(target, NOBODY)


def test_a_tracker_refuses_another_users_file_and_keeps_tracking(tmp_path):
    path = victim(tmp_path, "app.msdump", owner=NOBODY)
    report = run_tracked(path, "plain")
    assert_one_refusal(report["warnings"], "another user")
    assert_tracking(report["tracking"])
    assert_untouched(path, NOBODY)


def test_a_tracker_refuses_a_fifo_and_keeps_tracking(tmp_path):
    path = tmp_path / "app.msdump"
    os.mkfifo(path)
    report = run_tracked(path, "plain")
    assert_one_refusal(report["warnings"], "not a regular file")
    assert_tracking(report["tracking"])


def test_a_forked_childs_dump_is_new_and_0600(tmp_path):
    path = tmp_path / "app.msdump"
    report = run_tracked(path, "fork-none")
    child = report["child"]
    assert report["child_status"] == 0 and child["warnings"] == [] and report["warnings"] == []
    assert_tracking(child["tracking"])
    assert_tracking(report["tracking"])
    child_path = tmp_path / f"app.msdump.{child['pid']}"
    assert mode_of(child_path) == 0o600 and mode_of(path) == 0o600
    assert open_dump(child_path).n_records > 0


@pytest.mark.parametrize("planted", ["fork-symlink", "fork-own", "fork-foreign"])
def test_a_forked_child_never_reuses_what_sits_at_its_path(tmp_path, planted):
    target = victim(tmp_path, owner=NOBODY)
    path = tmp_path / "app.msdump"
    report = run_tracked(path, planted, target)
    child = report["child"]
    assert report["child_status"] == 0, report
    assert report["warnings"] == []
    assert_one_refusal(child["warnings"], {"fork-symlink": "symbolic link", "fork-own": "already",
                                           "fork-foreign": "another user"}[planted])
    assert_tracking(child["tracking"])
    assert_tracking(report["tracking"])
    assert_untouched(target, NOBODY)
    child_path = tmp_path / f"app.msdump.{child['pid']}"
    if planted == "fork-symlink":
        assert child_path.is_symlink()
    else:
        assert child_path.read_bytes() == b"already here\n"
        assert os.lstat(child_path).st_uid == (NOBODY if planted == "fork-foreign" else os.geteuid())
    assert open_dump(path).n_records > 0  # the parent's own dump goes on


def test_a_child_of_a_stopped_dump_leaves_the_parents_file_alone(tmp_path):
    # The parent stopped writing (full disk) and keeps its chunks readable at the path: a child
    # must neither reopen that path (truncating those chunks) nor start a dump of its own.
    path = tmp_path / "app.msdump"
    report = run_tracked(path, "stopped")
    assert len(report["warnings"]) == 1 and "stopped writing its dump" in report["warnings"][0]
    child = report["child"]
    assert report["child_status"] == 0 and child["warnings"] == [], report
    assert_tracking(child["tracking"])
    assert path.read_bytes().hex() == report["parent_dump_at_fork"]
    assert not os.path.lexists(tmp_path / f"app.msdump.{child['pid']}")
    assert open_dump(path, strict=True).n_records > 0
