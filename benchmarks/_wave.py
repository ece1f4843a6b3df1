"""A wave of short-lived threads, as a thread-per-request server makes them: the memory
benchmarks (memory.py, thread_churn.py) read RSS while a wave is alive and after it exited."""
import mmap
import threading


def rss():
    """The process's resident set now, in bytes (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


def rss_anon():
    """The anonymous part of the resident set (/proc/self/status RssAnon): memory the process
    holds, as opposed to pages of the files it maps (library code, read on first use), which the
    system can drop and reread."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def wave(alive, probe):
    """Starts `alive` threads that each allocate a few blocks (one of 64 KiB: large, so always
    sampled, and every thread has records to buffer) and wait; calls probe() while all of them
    are alive; lets them exit and joins them. Returns what probe returned."""
    ready = threading.Barrier(alive + 1)
    leave = threading.Event()

    def work():
        keep = [bytes(65536), bytearray(3000), [object() for _ in range(20)], "x" * 200]
        ready.wait()
        leave.wait()
        del keep

    threads = [threading.Thread(target=work) for _ in range(alive)]
    for t in threads:
        t.start()
    ready.wait()
    try:
        return probe()
    finally:
        leave.set()
        for t in threads:
            t.join()
