"""OTLP profiles pushed to a receiver built on the official ``opentelemetry-proto`` profiles
service: over gRPC and over HTTP, with the standard ``OTEL_EXPORTER_OTLP_*`` variables, the
metrics' resource, and the expected samples; a Collector that refuses connections or answers
slowly costs the application nothing but a bounded queue, and what is dropped is counted."""
import logging
import os
import threading
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

import memscope_otel
from memscope_otel import profiles_otlp, profiles_push, tracker as tracker_module
from memscope_otel.profiles_otlp import Frame, Profile, decode_samples, encode_request

from .profiles_receiver import ProfilesReceiver, ReceiverProcess

N_BLOCKS, BLOCK = 30, 200_000
OTLP_VARIABLES = [k for k in os.environ if k.startswith("OTEL_EXPORTER_OTLP_")]


@pytest.fixture
def receiver():
    r = ProfilesReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def clean_env(monkeypatch):
    for key in OTLP_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def allocate_known_blocks():
    return [bytearray(BLOCK - 1) for _ in range(N_BLOCKS)]  # BLOCK bytes each (the NUL), large: weight 1


KNOWN_LINE = allocate_known_blocks.__code__.co_firstlineno + 1


def run_tracked(seconds=2.5, **settings):
    """Starts memscope with profiles on, makes the known blocks, keeps them ``seconds`` (a push
    happens meanwhile), stops; returns the tracker's per-site estimates at the end and the
    pusher's stats."""
    provider = MeterProvider(resource=Resource.create({"service.name": "profiled-app",
                                                       "service.instance.id": "instance-7"}))
    tracker = memscope_otel.start(meter_provider=provider, profiles_exporter="otlp", profiles_interval=1,
                                  adaptive=False, **settings)
    assert tracker is not None and tracker.profiles is not None
    try:
        kept = allocate_known_blocks()
        time.sleep(seconds)
        del kept
    finally:
        memscope_otel.stop()
    per_site = tracker._final.per_site
    return per_site, dict(tracker.profiles.stats)  # (the pusher may still finish a send later)


def known_site_estimate(per_site):
    return sum(b for site, (b, _, _) in per_site.items()
               if getattr(site, "file", None) == __file__ and site.line == KNOWN_LINE)


def at_known_line(samples):
    return sum(v for stack, v in samples.items() if stack[0].file == __file__ and stack[0].line == KNOWN_LINE)


def check_requests(requests, per_site):
    assert requests, "no profiles arrived"
    space = inuse_max = 0
    for _, _, request in requests:
        resource = {kv.key: kv.value.string_value for kv in request.resource_profiles[0].resource.attributes}
        assert resource["service.name"] == "profiled-app" and resource["service.instance.id"] == "instance-7"
        decoded = decode_samples(request)
        assert set(decoded) == {("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"),
                                ("inuse_space", "bytes")}
        space += at_known_line(decoded["alloc_space", "bytes"])
        inuse_max = max(inuse_max, at_known_line(decoded["inuse_space", "bytes"]))
    # The pushes add up to what this run allocated at that line: every known block exactly
    # (large: weight 1), plus the list's own small allocations if one was sampled (weight up to
    # 1/0.001 x a few hundred bytes); the innermost frame of each sample is the allocating one.
    # (The tracker's estimates are cumulative for the process, across the tests' restarts.)
    assert N_BLOCKS * BLOCK <= space <= N_BLOCKS * BLOCK + 1_000_000
    assert known_site_estimate(per_site) >= space
    assert inuse_max >= N_BLOCKS * BLOCK  # a push while the blocks were live


def test_grpc_push_with_headers_and_resource(receiver, clean_env):
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", f"http://127.0.0.1:{receiver.grpc_port}")
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # the profiles one wins
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team%20a,authorization=Bearer%20t")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    per_site, stats = run_tracked()
    requests = receiver.wait(stats["sent"], timeout=10)
    assert stats["sent"] >= 2 and stats["failed"] == 0 and stats["dropped"] == 0, stats
    assert all(protocol == "grpc" for protocol, _, _ in requests)
    assert requests[0][1]["x-tenant"] == "team a" and requests[0][1]["authorization"] == "Bearer t"
    check_requests(requests, per_site)


def test_http_push_gzip(receiver, clean_env):
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.http_port}")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION", "gzip")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "x-tenant=b")
    per_site, stats = run_tracked()
    requests = receiver.wait(stats["sent"], timeout=10)
    assert stats["sent"] >= 2 and stats["failed"] == 0, stats
    assert all(protocol == "http" for protocol, _, _ in requests)
    assert requests[0][1]["content-encoding"] == "gzip" and requests[0][1]["x-tenant"] == "b"
    check_requests(requests, per_site)


def allocate_in_child():
    return [bytearray(BLOCK - 1) for _ in range(7)]


CHILD_LINE = allocate_in_child.__code__.co_firstlineno + 1


@pytest.fixture
def receiver_process():
    r = ReceiverProcess().start()
    yield r
    r.stop()


def test_forked_child_pushes_its_own_profiles(receiver_process, clean_env):
    """A forked child has a pusher of its own (the parent's threads and connection stay the
    parent's), and its allocation profile starts from its own zero. (The receiver runs in a
    process of its own: its gRPC server's threads in this one would make the fork unsafe for
    gRPC, whatever memscope does.)"""
    receiver = receiver_process
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.grpc_port}")
    provider = MeterProvider(resource=Resource.create({"service.name": "forking-app"}))
    # Large blocks only: a forked child reseeds its sampling from the clock, so the list's own
    # small allocations at the child's line would be a draw no seed fixes (each 32-64 KB at weight
    # 1,000); with them unsampled, the child's space at that line is exact.
    memscope_otel.start(meter_provider=provider, profiles_exporter="otlp", profiles_interval=1, adaptive=False,
                        small_sample_rate=0.0, medium_sample_rate=0.0, frequency_sample_interval=0)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the receiver and its status
            code = 1
            try:
                memscope_otel.snapshot()  # a safe point: the child's tracker starts here
                kept = allocate_in_child()
                memscope_otel.stop()  # pushes the last interval
                del kept
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        memscope_otel.stop()
    deadline = time.monotonic() + 10
    child_space = 0
    while time.monotonic() < deadline and child_space == 0:
        for _, _, request in receiver.wait(len(receiver.requests), timeout=0.5):
            samples = decode_samples(request)[("alloc_space", "bytes")]
            child_space += sum(v for stack, v in samples.items()
                               if stack[0].file == __file__ and stack[0].line == CHILD_LINE)
    # The seven blocks (large: weight 1), exactly.
    assert child_space == 7 * BLOCK


def test_collector_refusing_connections_costs_one_log_line(clean_env, caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    caplog.set_level(logging.WARNING, logger="memscope_otel")
    _, stats = run_tracked(seconds=3.5)
    assert stats["sent"] == 0 and stats["failed"] >= 3, stats
    failures = [r for r in caplog.records if "profiles export failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]


def test_slow_collector_fills_only_a_bounded_queue(clean_env):
    # A receiver that does not answer while the application runs: the first request stays in
    # flight, QUEUE_REQUESTS wait, every later one is dropped and counted, whatever the pace of
    # the machine (how many intervals get built in 6 s is its only timing).
    slow = ProfilesReceiver(delay_s=60).start()
    try:
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{slow.grpc_port}")
        clean_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "20000")
        t0 = time.monotonic()
        _, stats = run_tracked(seconds=6.0)
        elapsed = time.monotonic() - t0
    finally:
        slow.stop()
    assert stats["built"] >= 4 and stats["sent"] == 0, stats
    assert stats["dropped"] >= stats["built"] - 1 - profiles_push.QUEUE_REQUESTS, stats
    # the application waited for stop()'s bounded flush (5 s) at most, beside the tracker's own
    # start and stop; a flush that waited for the 60 s answer (or the 20 s timeout) is far past this
    assert elapsed < 6.0 + 5.0 + 6.0


def test_bad_settings_warn_and_keep_defaults(clean_env, caplog):
    caplog.set_level(logging.WARNING, logger="memscope_otel")
    settings = profiles_otlp.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "udp", "OTEL_EXPORTER_OTLP_TIMEOUT": "-5",
                                       "OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION": "zstd"})
    assert (settings.protocol, settings.timeout_s, settings.compression) == ("grpc", 10.0, "none")
    text = " ".join(r.getMessage() for r in caplog.records)
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION"):
        assert name in text
    http = profiles_otlp.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                   "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/"})
    assert http.endpoint == "https://collector:4318/v1development/profiles"


def test_encoding_round_trips_and_shares_one_dictionary():
    a, b = Frame("f", "/app/x.py", 3), Frame("g", "/app/y.py", 9)
    profiles = [Profile("alloc_space", "bytes", {(a, b): 10, (b,): 5, (a,): 0}, 1_000, 2_000),
                Profile("inuse_space", "bytes", {(a, b): 7}, 3_000)]
    request = encode_request(profiles, {"service.name": "s"})
    assert decode_samples(request) == {("alloc_space", "bytes"): {(a, b): 10, (b,): 5},
                                       ("inuse_space", "bytes"): {(a, b): 7}}
    table = request.dictionary
    assert table.string_table[0] == "" and len(table.stack_table) == 3  # the zero stack, (a, b), (b,)
    assert len(table.location_table) == 3 and len(table.function_table) == 3
    assert tracker_module.current() is None


class _BlockingExporter:
    """Stands in for ProfilesExporter: an export takes ``seconds``, and says when it started and ended."""

    def __init__(self, protocol, seconds):
        self.settings = profiles_otlp.OtlpSettings(protocol=protocol)
        self.seconds = seconds
        self.started, self.ended = threading.Event(), []

    def export(self, request):
        self.started.set()
        time.sleep(self.seconds)
        self.ended.append(time.monotonic())

    def close(self):
        pass


def test_pressure_on_the_optimizer_counts_drops_and_busy_time():
    exporter = _BlockingExporter("grpc", 0.3)
    pusher = profiles_push.ProfilePusher(lambda: [], exporter, {"service.name": "s"}, interval_s=3600)
    pusher.start()
    try:
        first = pusher.push_now()
        assert exporter.started.wait(10)  # the sender has taken it: the queue is empty again
        pushed = [first] + [pusher.push_now() for _ in range(5)]  # two queued, three dropped
        time.sleep(1.0)
        loads = {name: load for name, (load, _) in pusher.pressure(1.0).items()}
        ended, dropped = len(exporter.ended), pusher.stats["dropped"]  # (stop() pushes once more)
    finally:
        pusher.stop()
    assert pushed == [True, True, True, False, False, False] and dropped == 3
    assert loads["profiles_dropped"] == 3
    # 0.3 s per export, the three (one in flight, two queued) done within the second on an idle
    # machine, over a budget of half the time: 1.8 and a little (each sleep runs a little over
    # 0.3 s); at least one done however loaded the machine. An export counted twice would come to
    # 2.4 at least.
    assert ended <= 1 + profiles_push.QUEUE_REQUESTS
    assert 0.6 <= loads["profiles_export"] <= 3 * 0.3 / 0.5 + 0.2
    assert loads["profiles_payload"] < 0.01
    assert pusher.pressure(1.0)["profiles_dropped"][0] == 0  # per interval, not cumulative


def _fork_during_an_export(protocol, seconds, in_child):
    """Forks while the pusher's export is in flight: (when fork() returned in the parent, the
    exporter, the child's exit code: ``in_child()``'s)."""
    exporter = _BlockingExporter(protocol, seconds)
    pusher = profiles_push.ProfilePusher(lambda: [], exporter, {"service.name": "s"}, interval_s=3600)
    pusher.start()
    try:
        assert pusher.push_now()
        assert exporter.started.wait(10)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                code = in_child()
            finally:
                os._exit(code)
        forked_at = time.monotonic()
        _, status = os.waitpid(pid, 0)
    finally:
        pusher.stop()
    return forked_at, exporter, os.waitstatus_to_exitcode(status)


def _grpc_export_in_child():
    """0: the export got past the fork check (to a port nobody listens on: refused by gRPC
    itself); 5: refused for the fork."""
    try:
        profiles_otlp.ProfilesExporter(profiles_otlp.OtlpSettings(endpoint="127.0.0.1:9", timeout_s=2)).export(
            encode_request([], {"service.name": "s"}))
    except profiles_otlp.ExportError as exc:
        return 5 if "forked while a gRPC export was in flight" in str(exc) else 0
    return 0


def test_a_fork_waits_for_the_grpc_export_in_flight(monkeypatch):
    """gRPC skips its fork handlers while another thread is inside a call, and a child that then
    uses gRPC can crash: the fork waits for the export to end, and the child may use gRPC."""
    monkeypatch.setattr(profiles_push, "FORK_WAIT_S", 10.0)  # a 0.4 s export ends well within it
    forked_at, exporter, code = _fork_during_an_export("grpc", 0.4, _grpc_export_in_child)
    assert exporter.ended and forked_at >= exporter.ended[0]
    assert code == 0


def test_a_fork_past_the_wait_leaves_the_child_off_grpc(monkeypatch):
    monkeypatch.setattr(profiles_push, "FORK_WAIT_S", 0.1)
    forked_at, exporter, code = _fork_during_an_export("grpc", 1.5, _grpc_export_in_child)
    assert exporter.ended and forked_at < exporter.ended[0]  # the fork did not wait for it
    assert code == 5  # the child refuses gRPC, with the reason
    assert not profiles_otlp._grpc_unusable  # (in the parent, gRPC stays usable)


def test_a_fork_does_not_wait_for_an_http_export():
    forked_at, exporter, _ = _fork_during_an_export("http/protobuf", 1.5, lambda: 0)
    assert exporter.ended and forked_at < exporter.ended[0]


def test_a_child_forked_past_the_wait_forks_again_without_waiting(monkeypatch):
    """The parent's pusher, whose sender held its lock at the fork, is forgotten in the child: a
    fork there does not wait FORK_WAIT_S on a lock nobody will release (a fork of a process
    that exits at once takes milliseconds)."""
    monkeypatch.setattr(profiles_push, "FORK_WAIT_S", 0.5)

    def fork_again():
        # A wait here would be the whole 30 s: a loaded machine's slow fork (it once took over
        # the 0.5 s the parent's fork waited) cannot pass for one.
        profiles_push.FORK_WAIT_S = 30.0
        t0 = time.monotonic()
        grandchild = os.fork()
        if grandchild == 0:
            os._exit(0)
        os.waitpid(grandchild, 0)
        return 0 if time.monotonic() - t0 < 10.0 else 7

    _, _, code = _fork_during_an_export("grpc", 3.0, fork_again)
    assert code == 0
