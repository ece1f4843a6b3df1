"""A program with known allocation sites, for `memscope-otel run` tests.

    known_sites.py EXIT_STATUS [--signal NAME] [--crash] [--gc-at-exit]

Allocates 200 frames of 64 KiB in ``allocate_frames`` (large: always sampled, kept live to the
end) and 100,000 short strings in ``churn_strings`` (small, freed at once), writes exact bytes to
stdout and stderr, then exits with EXIT_STATUS, or, with ``--signal``, waits past one reading and
kills itself with that signal, or, with ``--crash``, raises an uncaught exception; with
``--gc-at-exit``, a garbage collection runs at exit before memscope's final reading.
"""
import atexit
import gc
import os
import signal
import sys
import time

STDOUT_BYTES = b"stdout: \x00\xff binary \xe2\x9c\x93\r\nlast line without newline"
STDERR_BYTES = b"stderr: the program's own \xe2\x9c\x93\n"


def allocate_frames():
    # The list's items in one block made up front: grown by a comprehension, its reallocs of up
    # to 864 B would share the frames' line, each sampled at the small rate with weight 1,000.
    frames = [None] * 200
    for i in range(200):
        frames[i] = bytearray(65536)
    return frames


def churn_strings():
    total = 0
    for i in range(100_000):
        total += len(str(i) * 4)
    return total


FRAMES = []  # module-level: still live when the program exits


def main():
    FRAMES.extend(allocate_frames())
    churn_strings()
    sys.stdout.buffer.write(STDOUT_BYTES)
    sys.stdout.flush()
    sys.stderr.buffer.write(STDERR_BYTES)
    sys.stderr.flush()
    if "--signal" in sys.argv:
        time.sleep(2.5)  # past the first periodic reading (one a second), with room for a slow machine
        os.kill(os.getpid(), getattr(signal, sys.argv[sys.argv.index("--signal") + 1]))
        time.sleep(30)
    if "--gc-at-exit" in sys.argv:  # a collection after the exit, before the tracker's final reading
        atexit.register(gc.collect)
    if "--crash" in sys.argv:
        raise RuntimeError("the program's own uncaught error")
    return int(sys.argv[1])


if __name__ == "__main__":
    sys.exit(main())
