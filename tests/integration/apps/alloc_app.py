"""An allocation workload for the end-to-end tests, meant to run under ``opentelemetry-instrument``.

It does not import memscope itself: the ``memscope`` instrumentor must start the tracker. It
allocates objects of all three size classes (small < 1 KiB, medium, large >= 8 KiB), keeps some of
them alive, and prints one JSON line with ``memscope_otel.is_running()`` so that tests can see
whether the instrumentor activated the tracker.
"""

import json
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
kept = []
deadline = time.monotonic() + seconds
rounds = 0
while time.monotonic() < deadline:
    small = [str(i) * 3 for i in range(2000)]
    medium = [bytearray(2048) for _ in range(50)]
    large = [bytearray(64 * 1024) for _ in range(5)]
    kept.append(large[0])
    if len(kept) > 20:
        kept.pop(0)
    del small, medium, large
    rounds += 1
    time.sleep(0.02)

try:
    import memscope_otel

    running = memscope_otel.is_running()
except Exception as exc:  # reported, so a test failure says what went wrong
    running = f"error: {exc!r}"
print(json.dumps({"rounds": rounds, "memscope_running": running}), flush=True)
