"""Log analytics: synthesize access-log lines, parse them with a regex, aggregate per endpoint."""
import random
import re
import statistics
import time
from collections import Counter, defaultdict

LINE = re.compile(r'(?P<ip>\S+) - - \[(?P<ts>[^\]]+)\] "(?P<method>\w+) (?P<path>\S+) HTTP/1\.1" '
                  r'(?P<status>\d{3}) (?P<size>\d+) (?P<ms>\d+)')
PATHS = ["/", "/login", "/api/items", "/api/items/{}", "/static/app.js", "/search?q={}"]


def lines(rng, n):
    for _ in range(n):
        path = rng.choice(PATHS).format(rng.randint(1, 999))
        yield (f"10.0.{rng.randint(0, 255)}.{rng.randint(0, 255)} - - [12/Mar/2024:10:{rng.randint(0, 59):02d}:00] "
               f'"{rng.choice(("GET", "POST"))} {path} HTTP/1.1" {rng.choice((200, 200, 200, 404, 500))} '
               f"{rng.randint(100, 90000)} {rng.randint(1, 900)}")


def analyze(batch):
    status = Counter()
    latency = defaultdict(list)
    for line in batch:
        m = LINE.match(line)
        if not m:
            continue
        endpoint = m["path"].split("?")[0].rstrip("0123456789/") or "/"
        status[m["status"]] += 1
        latency[endpoint].append(int(m["ms"]))
    return status, {k: (len(v), statistics.median(v)) for k, v in latency.items()}


def run(duration_s=1.0, seed=11):
    rng = random.Random(seed)
    deadline = time.monotonic() + duration_s
    total = 0
    while time.monotonic() < deadline:
        status, _ = analyze(list(lines(rng, 1500)))
        total += sum(status.values())
    return {"lines": total}
