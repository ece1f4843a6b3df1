"""memscope-otel report: figures against direct numpy sums, text output, HTML structure, CLI."""
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from memscope_otel import cli
from memscope_otel.dump import DumpWriter, open_dump
from memscope_otel.records import RECORD_DTYPE, domain_of, event_of
from memscope_otel.report import analyze, bucket_label, fmt_bytes, fmt_count, render_html, render_text, size_buckets

from synthetic import BASE_US, write_workload_dump


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "w.msdump"
    written = write_workload_dump(path)
    return path, np.concatenate(written)


def test_figures_match_direct_sums(workload):
    path, recs = workload
    rep = analyze(open_dump(path), top=5, bins=20)
    flags = recs["flags"].astype(int)
    event = event_of(flags)
    alloc = (event == 0) | (event == 2)
    free = event == 1
    wb = recs["weight"].astype(float) * recs["size"].astype(float)
    w = recs["weight"].astype(float)
    assert rep.est_bytes.sum() == pytest.approx(wb[alloc].sum(), rel=1e-12)
    assert rep.est_count.sum() == pytest.approx(w[alloc].sum(), rel=1e-12)
    assert rep.live_bytes.sum() == pytest.approx(wb[alloc].sum() - wb[free].sum(), rel=1e-9)
    assert rep.n_allocs == alloc.sum() and rep.n_frees == free.sum() and rep.n_records == len(recs)
    # the rate integrates back to the total; the live curve ends at the live estimate
    bin_s = rep.bin_edges_s[1] - rep.bin_edges_s[0]
    assert (rep.rate_bytes * bin_s).sum() == pytest.approx(wb[alloc].sum(), rel=1e-9)
    assert rep.live_over_time[-1] == pytest.approx(rep.live_bytes.sum(), rel=1e-9)
    # top site by bytes is the site with the largest weighted bytes among non-manual records
    domain = domain_of(flags)
    mask = alloc & (domain != 3)
    per_site = np.bincount(recs["site"][mask], wb[mask])
    best = rep.top_sites_by_bytes[0]
    assert best.id == int(np.argmax(per_site)) and best.est_bytes == pytest.approx(per_site.max())
    assert best.label.startswith("/srv/app/module")
    assert [r.est_bytes for r in rep.top_sites_by_bytes] == sorted((r.est_bytes for r in rep.top_sites_by_bytes), reverse=True)
    assert [r.est_count for r in rep.top_types_by_count] == sorted((r.est_count for r in rep.top_types_by_count), reverse=True)
    assert all(r.domain == "manual" for r in rep.top_types_by_bytes) and rep.top_types_by_bytes
    assert rep.size_buckets.sum() == pytest.approx(w[alloc].sum())


def test_size_buckets_match_definition():
    sizes = np.array([0, 1, 2, 3, 4, 5, 1023, 1024, 1025, 2**32, 2**32 + 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert size_buckets(sizes).tolist() == [0, 0, 1, 2, 2, 3, 10, 10, 11, 32, 33, 63, 64]
    assert bucket_label(0) == "<= 1 B" and bucket_label(10) == "<= 1 KiB" and bucket_label(11) == "<= 2 KiB"


def test_formatting():
    assert fmt_bytes(0) == "0 B" and fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(-2 * 1024**3) == "-2.0 GiB"
    assert fmt_count(12345) == "12.3 k" and fmt_count(7) == "7" and fmt_count(float("nan")) == "nan"


def test_text_report(workload):
    path, _ = workload
    text = render_text(analyze(open_dump(path)))
    for heading in ("Top sites by estimated bytes", "Top sites by estimated count", "Top types (manual API)",
                    "Size distribution", "Allocation rate over time", "Live estimate over time"):
        assert heading in text
    assert "/srv/app/module" in text and "numpy.ndarray" in text
    assert re.search(r"<= 1 KiB\s+\S+ [kM]\s+█+", text)


def test_html_is_self_contained(workload):
    path, _ = workload
    page = render_html(analyze(open_dump(path)))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 7  # top sites, top types, size distribution, rate, live, two flame graphs
    assert page.count("class=\"flamegraph\"") == 2 and "function_" in page.split("estimated bytes allocated</text>")[1]
    assert page.count("<polyline") == 2
    assert "<script" not in page and "src=" not in page and "href=" not in page
    # the only URL is the SVG namespace, which is an identifier, not something fetched
    assert set(re.findall(r"https?://[^'\" ]+", page)) == {"http://www.w3.org/2000/svg"}


def test_html_escapes_labels(tmp_path):
    path = tmp_path / "evil.msdump"
    recs = np.zeros(2, dtype=RECORD_DTYPE)
    recs["site"] = 9
    recs["weight"] = 1
    recs["size"] = 100
    with DumpWriter(path, {"x": "<i>evil</i>"}) as w:
        w.write_strings({9: "<script>alert(1)</script>:f:1"})
        w.write_chunk(BASE_US, recs)
    page = render_html(analyze(open_dump(path)))
    assert "<script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "<i>" not in page and "&lt;i&gt;evil" in page


def test_calls_on_one_line_are_one_row(tmp_path):
    """Two ids for one file:function:line (two bytecode offsets of the same line) are one row
    with their sums; another line stays its own."""
    path = tmp_path / "lines.msdump"
    recs = np.zeros(3, dtype=RECORD_DTYPE)
    recs["site"] = [20, 21, 22]
    recs["weight"] = [2.0, 3.0, 1.0]
    recs["size"] = [100, 1000, 50]
    with DumpWriter(path, {}) as w:
        w.write_strings({20: "/app/a.py:f:7", 21: "/app/a.py:f:7", 22: "/app/a.py:f:8"})
        w.write_chunk(BASE_US, recs)
    rows = {r.label: r for r in analyze(open_dump(path)).top_sites_by_bytes}
    assert set(rows) == {"/app/a.py:f:7", "/app/a.py:f:8"}
    assert (rows["/app/a.py:f:7"].est_bytes, rows["/app/a.py:f:7"].est_count, rows["/app/a.py:f:7"].records) \
        == (3200.0, 5.0, 2)
    assert rows["/app/a.py:f:8"].est_bytes == 50.0


def test_empty_dump(tmp_path):
    path = tmp_path / "empty.msdump"
    DumpWriter(path, {}).close()
    rep = analyze(open_dump(path))
    assert rep.n_records == 0 and rep.top_sites_by_bytes == []
    assert "0 sampled records" in render_text(rep)
    assert "no data" in render_html(rep)


def test_cli_report_text_and_html(workload, tmp_path, capsys):
    path, _ = workload
    out = tmp_path / "r.html"
    assert cli.main(["report", str(path), "--html", str(out), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "Top sites by estimated bytes" in text and str(out) in text
    assert out.read_text().count("<svg") == 7


def test_cli_report_errors(tmp_path, capsys):
    bad = tmp_path / "bad.msdump"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    assert cli.main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a memscope dump" in err and "byte 0" in err
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        cli.main(["report", str(bad), "--top", "0"])
    assert "--top must be in 1..1000" in capsys.readouterr().err


def test_cli_report_torn_file_is_reported_not_fatal(workload, tmp_path, capsys):
    path, _ = workload
    torn = tmp_path / "torn.msdump"
    data = path.read_bytes()
    torn.write_bytes(data[:-100])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli.main(["report", str(torn)]) == 0
    assert "torn last chunk" in capsys.readouterr().out


def test_cli_run_tracks_a_program_and_writes_a_dump(tmp_path):
    pytest.importorskip("memscope_otel._memscope")
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent("""
        import sys
        def build():
            out = []  # a plain loop: comprehensions are functions of their own before 3.12
            for _ in range(300):
                out.append(bytearray(20000))
            return out
        data = build()
        print("args", sys.argv[1:])
        sys.exit(3)
    """))
    dump = tmp_path / "run.msdump"
    proc = subprocess.run([sys.executable, "-m", "memscope_otel.cli", "run", "--console", "--interval-ms", "100000",
                           "--dump", str(dump), "--", str(app), "x", "y"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "args ['x', 'y']" in proc.stdout
    assert "memscope.allocated" in proc.stdout  # the final console export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = analyze(open_dump(dump))
    # 300 buffers of 20000 bytes are large (>= 8192): always sampled with weight 1
    build = [r for r in rep.top_sites_by_bytes if ":build" in r.label]
    assert build and build[0].est_count >= 300 and build[0].est_bytes >= 300 * 20000


def test_report_survives_arbitrary_record_bits(tmp_path):
    # records read from a file are arbitrary bits: NaN and infinite weights, huge sizes and sites,
    # unused event kinds and classes, time deltas all over the 32-bit range
    from synthetic import chunk_records

    path = tmp_path / "noise.msdump"
    with DumpWriter(path, {}) as w:
        for i in range(5):
            w.write_chunk(BASE_US + i, chunk_records(100 + i, 400))
        w.write_strings({i: f"s{i}" for i in range(0, 40000, 997)})
    with np.errstate(all="ignore"):
        rep = analyze(open_dump(path), top=10, bins=30)
        text, page = render_text(rep), render_html(rep)
    assert rep.n_records == 2000 and "Size distribution" in text and page.count("<svg") >= 3


def test_one_row_per_line_and_stacks_summed(tmp_path):
    """Two stacks through one file:function:line are one row of the site tables, whose sums are
    theirs together; the stacks keep their own (and the text report lists them)."""
    path = tmp_path / "stacks.msdump"
    recs = np.zeros(6, dtype=RECORD_DTYPE)
    recs["site"] = [16, 16, 17, 17, 17, 18]
    recs["size"] = 1000
    recs["weight"] = [1, 1, 2, 2, 2, 4]  # flags 0: OBJ allocations of the small class
    with DumpWriter(path, {}) as w:
        w.write_strings({16: "app.py:f:3\napp.py:f:3\napp.py:a:10", 17: "app.py:f:3\napp.py:f:3\napp.py:b:20",
                         18: "app.py:g:5"})
        w.write_chunk(BASE_US, recs)
    rep = analyze(open_dump(path))
    rows = {r.label: r for r in rep.top_sites_by_bytes}
    assert set(rows) == {"app.py:f:3", "app.py:g:5"}
    assert rows["app.py:f:3"].est_bytes == 8000.0 and rows["app.py:f:3"].records == 5
    stacks = {r.frames: (r.est_bytes, r.est_count) for r in rep.stacks}
    assert stacks == {("app.py:f:3", "app.py:a:10"): (2000.0, 2.0), ("app.py:f:3", "app.py:b:20"): (6000.0, 6.0),
                      ("app.py:g:5",): (4000.0, 4.0)}
    assert rows["app.py:f:3"].est_bytes == sum(b for f, (b, _) in stacks.items() if f[0] == "app.py:f:3")
    text = render_text(rep)
    assert "Top stacks by estimated bytes" in text and "      app.py:b:20" in text
