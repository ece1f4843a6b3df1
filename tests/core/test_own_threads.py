"""The tracker's own threads: marked once for good, they make no call into C to mark themselves
again (each such call gives the GIL up, and a background thread taking it back from a busy
application forces a switch on it), and nothing they allocate is counted."""
import threading

from memscope_otel import sampler


class _CountingLib:
    """The cffi lib, counting calls of ms_set_thread_ignored."""

    def __init__(self, lib):
        self._lib = lib
        self.calls = 0

    def ms_set_thread_ignored(self, value):
        self.calls += 1
        return self._lib.ms_set_thread_ignored(value)

    def __getattr__(self, name):
        return getattr(self._lib, name)


def _in_thread(work):
    out = {}

    def run():
        out["result"] = work()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return out["result"]


def test_an_own_thread_enters_ignored_blocks_without_calling_c(monkeypatch):
    ffi, lib = sampler._lib()
    counting = _CountingLib(lib)
    monkeypatch.setattr(sampler, "_LOADED", (ffi, counting))

    def own_thread():
        sampler.ignore_this_thread()
        marked = counting.calls
        for _ in range(3):
            with sampler.ignored():
                pass
        return marked, counting.calls, lib.ms_set_thread_ignored(1)

    marked, after_blocks, still_ignored = _in_thread(own_thread)
    assert marked == 1 and after_blocks == 1
    assert still_ignored == 1  # the block's exit did not unmark the thread

    def application_thread():
        with sampler.ignored():
            inside = lib.ms_set_thread_ignored(1)
        return counting.calls - after_blocks, inside, lib.ms_set_thread_ignored(0)

    calls, inside, after = _in_thread(application_thread)
    assert calls == 2  # marked on entry, previous setting put back on exit
    assert inside == 1 and after == 0


def test_allocations_of_an_own_thread_are_not_counted(tracker):
    def own_thread():
        sampler.ignore_this_thread()
        with sampler.ignored():
            pass
        before = sampler.read_counters()
        kept = [bytearray(3000) for _ in range(5000)]  # medium: no fast path, each one counted
        after = sampler.read_counters()
        return before, after, len(kept)

    before, after, n = _in_thread(own_thread)
    medium_obj = after.allocations[0][1] - before.allocations[0][1]
    assert n == 5000 and medium_obj < 100, medium_obj
