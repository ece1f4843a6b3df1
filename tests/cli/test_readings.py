"""The pieces behind `run` and `top`, without a process or a terminal: readings over the pipe,
rates, the /metrics page parser, the screen text, and the report's progress line."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from memscope_otel.prometheus_reading import PageError, base_name, parse_page
from memscope_otel.reading import Reading, SiteFigures, SiteKey, rates_between
from memscope_otel.reading_stream import ReadingDecoder, ReadingEncoder, StreamError, encode_error
from memscope_otel.sampler import Counters
from memscope_otel.sites import Site, TypeName
from memscope_otel.top_view import plain_line, screen_lines
from memscope_otel.tracker import Snapshot

PAGE = Path(__file__).parent / "data" / "exporter_page.txt"  # memscope's part of a real demo page


class FakeResolver:
    def __init__(self, names):
        self.names = names

    def resolve(self, site_id):
        return self.names[site_id]


def _snapshot(resolver, per_id, allocations=5):
    counters = Counters(
        allocations=np.full((4, 3), allocations, dtype=np.uint64), bytes=np.full((4, 3), 100, dtype=np.uint64),
        deallocations=np.zeros(4, dtype=np.uint64), by_size=np.zeros((4, 65), dtype=np.uint64),
        samples=7, dropped=1, live_untracked=0, slow_path_calls=3, slow_path_ns=2_000_000, threads_seen=1,
        threads_live=1, ids_used=20, footprint_bytes=4096)
    counters.by_size[0, 17] = 9
    per_site = {}
    for i, b, c, live in per_id:  # as Tracker._snapshot groups them
        sums = per_site.get(resolver.resolve(i), (0.0, 0.0, 0.0))
        per_site[resolver.resolve(i)] = (sums[0] + b, sums[1] + c, sums[2] + live)
    return Snapshot(counters, (0.05, 0.001), ("obj", "mem", "raw"), np.array([1.0, 2.0, 0.0, 0.0]), per_id,
                    per_site)


def test_stream_sends_changed_sites_only_and_rebuilds_complete_readings():
    resolver = FakeResolver({
        8: Site("/app/a.py", "build", 3, "obj"),
        9: Site("/app/a.py", "build", 3, "obj"),  # another bytecode offset of the same line
        10: Site("/app/b.py", "parse", 7, "mem"),
        11: TypeName("GpuBuffer"),
    })
    encoder, decoder = ReadingEncoder(started_s=0.0), ReadingDecoder()
    first = encoder.encode(_snapshot(resolver, [(8, 100.0, 1.0, 50.0), (9, 20.0, 2.0, 0.0), (10, 7.0, 1.0, 7.0),
                                                (11, 4096.0, 1.0, 4096.0)]))
    second = encoder.encode(_snapshot(resolver, [(8, 100.0, 1.0, 50.0), (9, 20.0, 2.0, 0.0), (10, 9.0, 2.0, 0.0),
                                                 (11, 4096.0, 1.0, 4096.0)], allocations=6), final=True)
    body = json.loads(second)["reading"]
    assert len(body["sites"]) == 1 and body["labels"] == {}  # only b.py changed; labels went once
    decoder.decode(first)
    reading = decoder.decode(second)
    a, b = SiteKey("/app/a.py", "build", 3, "obj"), SiteKey("/app/b.py", "parse", 7, "mem")
    assert reading.sites == {a: SiteFigures(120.0, 3.0, 50.0), b: SiteFigures(9.0, 2.0, 0.0)}
    assert reading.types == {"GpuBuffer": 4096.0}
    assert reading.final and reading.total_allocations == 6 * 12 and reading.by_size == {17: 9.0}
    assert reading.rates == {"small": 0.001, "medium": 0.05, "large": 1.0}
    assert reading.sampled_path_s == pytest.approx(0.002) and reading.footprint == 4096
    # A site gone from the snapshot (renamed on 3.10, or folded into <reclaimed>) leaves the reading.
    third = encoder.encode(_snapshot(resolver, [(8, 100.0, 1.0, 50.0), (9, 20.0, 2.0, 0.0),
                                                (11, 4096.0, 1.0, 4096.0)], allocations=6))
    assert decoder.decode(third).sites == {a: SiteFigures(120.0, 3.0, 50.0)}
    with pytest.raises(StreamError, match="no module named 'x'"):
        decoder.decode(encode_error("no module named 'x'"))


def test_rates_between_readings():
    site, newcomer = SiteKey("f.py", "g", 1, "obj"), SiteKey("f.py", "h", 2, "obj")
    before = Reading(time_s=10.0, sites={site: SiteFigures(1000.0, 10.0, 0.0)}, samples=5, sampled_path_s=0.5)
    after = Reading(time_s=12.0, sites={site: SiteFigures(5000.0, 30.0, 0.0), newcomer: SiteFigures(9e9, 1, 0)},
                    samples=25, sampled_path_s=0.7)
    before.allocations[0][0], after.allocations[0][0] = 100, 300
    before.allocated[1][2], after.allocated[1][2] = 4096, 0  # went down: a restarted process
    rates = rates_between(before, after)
    assert rates.allocations[0] == 100 and rates.allocated[1] == 0 and rates.samples == 10
    assert rates.sites == {site: (2000.0, 10.0)}  # the newcomer's total is not this interval's
    assert rates.top_sites(5) == [(site, 2000.0, 10.0)]
    assert rates.sampled_path_share == pytest.approx(0.1)


def _independent_sum(text, family, **labels):
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{family}{{(.*)}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_exporter_page_parses_to_the_same_figures():
    text = PAGE.read_text()
    reading = parse_page(text, time_s=1.0)
    assert reading.total_allocations == _independent_sum(text, "memscope_allocations_total") > 0
    assert reading.allocated[0][2] == _independent_sum(text, "memscope_allocated_bytes_total",
                                                       memscope_domain="obj", memscope_size_class="large")
    assert reading.live[0] == _independent_sum(text, "memscope_live_bytes", memscope_domain="obj")
    assert sum(reading.by_size.values()) == _independent_sum(text, "memscope_allocations_by_size_total")
    assert reading.by_size[5] == _independent_sum(text, "memscope_allocations_by_size_total", memscope_size_le="32")
    decode = [key for key in reading.sites if key.function == "JSONDecoder.decode"]
    assert len(decode) == 1 and (decode[0].line, decode[0].domain) == (338, "mem")
    assert reading.sites[decode[0]].bytes == _independent_sum(
        text, "memscope_site_allocated_bytes_total", code_function_name="JSONDecoder.decode") > 0
    assert reading.sites[decode[0]].count == _independent_sum(
        text, "memscope_site_allocations_total", code_function_name="JSONDecoder.decode") > 0
    assert reading.rates["small"] == 0.001 and reading.footprint > 0 and reading.dropped == 0
    assert reading.domains == ("obj", "mem", "raw")


def test_page_names_with_or_without_unit_suffixes():
    assert base_name("memscope_sampler_rate_ratio") == base_name("memscope_sampler_rate") == "memscope_sampler_rate"
    assert base_name("memscope_allocated_bytes_total") == "memscope_allocated"
    assert base_name("memscope_allocations_by_size_total") == "memscope_allocations_by_size"


@pytest.mark.parametrize("page, message", [
    ("# TYPE process_open_fds gauge\nprocess_open_fds 12\n", "no memscope metrics"),
    ("<html><body>Not a metrics page</body></html>\n", "not a Prometheus metrics page|no memscope metrics"),
    ("", "no memscope metrics"),
])
def test_page_without_memscope_metrics_is_refused(page, message):
    with pytest.raises(PageError, match=message):
        parse_page(page, time_s=0.0)


def _two_readings():
    text = PAGE.read_text()
    before = parse_page(text, time_s=0.0)
    after = parse_page(text, time_s=1.0)
    after.allocations[0][0] += 5000
    hot = next(iter(after.sites))
    after.sites[hot] = SiteFigures(after.sites[hot].bytes + 2 * 1024 * 1024, after.sites[hot].count + 10,
                                   after.sites[hot].live)
    return before, after, hot


@pytest.mark.parametrize("width, height", [(200, 60), (80, 24), (40, 10), (10, 3)])
def test_screen_fits_the_terminal(width, height):
    before, after, hot = _two_readings()
    lines = screen_lines("http://x/metrics", "reading every interval", before, after, width, height)
    assert 0 < len(lines) <= height and all(len(text) < width for _, text in lines)
    if width >= 80 and height >= 24:
        screen = "\n".join(text for _, text in lines)
        assert "5.0 k/s" in screen and hot.function in screen and "2.0 MiB/s" in screen


def test_screen_before_two_readings_and_plain_lines():
    before, after, hot = _two_readings()
    screen = "\n".join(text for _, text in screen_lines("src", "running", None, after, 120, 40))
    assert "…" in screen and "rates from the next reading on" in screen
    assert "rates from the next line on" in plain_line(None, after)
    line = plain_line(before, after)
    assert "allocs/s 5.0 k" in line and hot.function in line and "\n" not in line


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_report_progress_on_a_terminal_only(tmp_path):
    from memscope_otel.dump import DumpWriter, open_dump
    from memscope_otel.progress import TerminalProgress
    from memscope_otel.records import RECORD_DTYPE
    from memscope_otel.report import analyze

    path = tmp_path / "small.msdump"
    with DumpWriter(path, {}) as writer:
        for i in range(3):
            records = np.zeros(100, dtype=RECORD_DTYPE)
            records["size"], records["weight"], records["site"] = 64, 1.0, 8
            writer.write_chunk(1_700_000_000_000_000 + i, records)
    calls = []
    analyze(open_dump(path), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(100, 300), (200, 300), (300, 300)]
    terminal = FakeTerminal()
    progress = TerminalProgress("report", stream=terminal, min_interval_s=0.0)
    progress(150, 300)
    progress(300, 300)
    progress.finish()
    assert " 50.0% (150 of 300 records)" in terminal.getvalue() and terminal.getvalue().endswith("\r")
    pipe = io.StringIO()
    quiet = TerminalProgress("report", stream=pipe)
    quiet(1, 2)
    quiet.finish()
    assert pipe.getvalue() == ""
