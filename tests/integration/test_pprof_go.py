"""pprof profiles as real consumers read them: ``go tool pprof`` (Debian's golang-go) reads every
profile kind, from a dump (``memscope-otel report --pprof``) and from a running process
(``memscope_otel.profile``), and its top functions are the text report's top sites. Without go
the tests skip with the reason (fail under MEMSCOPE_REQUIRE_INTEGRATION=1)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import require_memscope_core, unavailable

# Two handlers through one allocating function, and a second function that keeps less: the
# allocations are large (always sampled), so the ranking is the same in every run.
PROGRAM = textwrap.dedent("""
    import sys
    import memscope_otel

    def make_rows(n):
        return [bytearray(50_000) for _ in range(n)]

    def make_blobs(n):
        return [bytes(30_000) for _ in range(n)]

    def handler_big():
        return make_rows(120)

    def handler_small():
        blobs = make_blobs(40)
        del blobs[20:]  # half of them freed: alloc and inuse differ
        return blobs

    memscope_otel.start(adaptive=False)
    keep = [handler_big(), handler_small()]
    for kind in ("alloc", "inuse", "heap"):
        with open(f"{sys.argv[1]}.{kind}.pb.gz", "wb") as f:
            f.write(memscope_otel.profile(kind))
    memscope_otel.stop()
""")

SAMPLE_TYPES = {"alloc": ["alloc_objects", "alloc_space"], "inuse": ["inuse_objects", "inuse_space"],
                "heap": ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]}


def go_binary():
    go = shutil.which("go")
    if go is None:
        unavailable("go is not installed (Debian package golang-go; scripts/install_ci_packages.sh installs it)")
    return go


def pprof_top(go, path, sample_index, tmp_path):
    """The functions of ``go tool pprof -top``, most flat value first."""
    env = dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache"), GOFLAGS="", PPROF_TMPDIR=str(tmp_path))
    result = subprocess.run([go, "tool", "pprof", "-top", "-nodefraction=0", f"-sample_index={sample_index}", str(path)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert f"Type: {sample_index}" in result.stdout, result.stdout
    rows = []
    header_seen = False
    for line in result.stdout.splitlines():
        if line.strip().startswith("flat"):
            header_seen = True
            continue
        if header_seen and line.strip():
            rows.append(line.split(None, 5)[5])
    assert rows, result.stdout
    return rows


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    require_memscope_core()
    tmp = tmp_path_factory.mktemp("pprof")
    dump = tmp / "app.msdump"
    env = dict(os.environ, OTEL_PYTHON_MEMSCOPE_DUMP_PATH=str(dump), OTEL_SDK_DISABLED="false")
    result = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp / "live")], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return tmp, dump


@pytest.mark.parametrize("kind", ["alloc", "inuse", "heap"])
def test_go_pprof_reads_every_kind_with_the_reports_top_functions(profiles, kind, tmp_path):
    from memscope_otel.dump import open_dump
    from memscope_otel.profiles import display_name, parse_frame
    from memscope_otel.report import analyze

    go = go_binary()
    tmp, dump = profiles
    out = tmp_path / f"dump.{kind}.pb.gz"
    cli = [sys.executable, "-m", "memscope_otel.cli"] if not shutil.which("memscope-otel") else ["memscope-otel"]
    result = subprocess.run([*cli, "report", str(dump), "--pprof", str(out), "--pprof-kind", kind],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rep = analyze(open_dump(dump), top=5)

    def shown(label):  # a report's file:function:line as pprof shows its function
        file, function, _ = parse_frame(label)
        return display_name(function, file)

    by_bytes = shown(rep.top_sites_by_bytes[0].label)
    by_live = shown(max(rep.top_sites_by_bytes, key=lambda r: r.live_bytes).label)
    # make_rows' comprehension (its own frame before 3.12; on 3.10 maybe by co_name alone)
    assert by_bytes.endswith("<listcomp>") or by_bytes == "make_rows", rep.top_sites_by_bytes
    # The dump's profile is the report's stacks: its top function (flat) for each sample type
    # is the report's, summed by innermost function.
    fields = {"alloc_objects": "est_count", "alloc_space": "est_bytes", "inuse_objects": "live_count",
              "inuse_space": "live_bytes"}
    for sample_type in SAMPLE_TYPES[kind]:
        flat = {}
        for row in rep.stacks:
            name = shown(row.frames[0])
            flat[name] = flat.get(name, 0) + int(round(getattr(row, fields[sample_type])))  # as the file has it
        top = pprof_top(go, out, sample_type, tmp_path)
        # (functions with equal values may come in any order)
        assert flat.get(top[0]) == max(flat.values()), (sample_type, top[:5], sorted(flat.items(), key=lambda kv: -kv[1])[:5])
        # the process's own profile: the workload's functions and their callers, by name
        live = pprof_top(go, tmp / f"live.{kind}.pb.gz", sample_type, tmp_path)
        assert {by_bytes, "handler_big"} <= set(live), (sample_type, live)
        if sample_type == "alloc_space":
            assert live[0] == by_bytes and top[0] == by_bytes, (live[:5], top[:5])
        if sample_type == "inuse_space":
            assert live[0] == by_live and top[0] == by_live, (live[:5], top[:5])
