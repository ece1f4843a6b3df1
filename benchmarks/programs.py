"""Allocation-heavy programs for benchmarks/workloads.py: each is what a real service or script
does a lot of, small enough to run in a fraction of a second. ``run(name, scale)`` runs one and
returns a checksum (so that no work can be skipped)."""
import json
import re
from collections import Counter, defaultdict


def json_roundtrip(scale):
    """Encode and decode nested documents (dicts, lists, str, float), like an API gateway."""
    doc = {"users": [{"id": i, "name": f"user{i}", "tags": ["a", "b", str(i)], "score": i * 1.5,
                      "active": i % 2 == 0, "address": {"city": "c" * (i % 7 + 1), "zip": str(10000 + i)}}
                     for i in range(200)]}
    total = 0
    for _ in range(scale):
        text = json.dumps(doc)
        back = json.loads(text)
        total += len(text) + len(back["users"])
    return total


def data_pipeline(scale):
    """Group, join, sort and aggregate rows held as dicts: a typical ETL step in pure Python."""
    total = 0
    for s in range(scale):
        rows = [{"k": i % 37, "v": (i * 7919) % 1000, "name": "n%d" % (i % 101)} for i in range(2000)]
        groups = defaultdict(list)
        for row in rows:
            groups[row["k"]].append(row)
        summary = {k: (len(g), sum(r["v"] for r in g), max(g, key=lambda r: r["v"])["name"])
                   for k, g in groups.items()}
        joined = [(r["k"], r["v"], summary[r["k"]][1]) for r in rows if r["v"] > 500]
        joined.sort(key=lambda t: (t[2], t[1]))
        total += len(joined) + s
    return total


_TOKEN = re.compile(r"[A-Za-z_]+|\d+|[^\sA-Za-z_\d]")


def text_tokenize(scale):
    """Build text from pieces and tokenize it with a regex: log parsing, templating."""
    total = 0
    for s in range(scale):
        lines = [f"GET /api/v{i % 3}/items/{i * 31 % 977}?q=alpha{i}&n={s} HTTP/1.1 200 {i * 13}" for i in range(300)]
        text = "\n".join(lines)
        tokens = _TOKEN.findall(text)
        counts = Counter(t.lower() for t in tokens)
        total += len(tokens) + len(counts) + len(text.upper().split())
    return total


class _Node:
    def __init__(self, value, parent=None):
        self.value = value
        self.parent = parent
        self.children = []
        self.attrs = {"depth": 0 if parent is None else parent.attrs["depth"] + 1}


def object_graph(scale):
    """Build a tree of class instances (each with a list and a dict), walk it, drop it."""
    total = 0
    for _ in range(scale):
        root = _Node(0)
        frontier = [root]
        made = 1
        while made < 3000:
            parent = frontier.pop(0)
            for j in range(4):
                child = _Node(made + j, parent)
                parent.children.append(child)
                frontier.append(child)
            made += 4
        stack = [root]
        while stack:
            node = stack.pop()
            total += node.value + node.attrs["depth"]
            stack.extend(node.children)
        del root, frontier, stack
    return total


def numpy_churn(scale):
    """Many small numpy arrays and temporaries, as in per-request feature computation."""
    import numpy as np

    total = 0.0
    base = np.arange(64, dtype=np.float64)
    for i in range(scale * 200):
        a = base * (i % 5 + 1)
        b = np.sqrt(a + 1.0)
        c = np.concatenate([a[:16], b[16:32]])
        d = c.reshape(4, 8).sum(axis=0)
        total += float(d[i % 8]) + float(np.dot(a[:8], b[:8]))
    return int(total)


def _wsgi_app(environ, start_response):
    from urllib.parse import parse_qs

    query = parse_qs(environ.get("QUERY_STRING", ""))
    items = [{"id": int(x), "label": f"item-{x}"} for x in query.get("id", [])]
    body = json.dumps({"path": environ["PATH_INFO"], "items": items}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def wsgi_handler(scale):
    """A WSGI app called directly (wsgiref environ and headers), like a web worker's hot loop."""
    from wsgiref.headers import Headers
    from wsgiref.util import setup_testing_defaults

    total = 0
    for i in range(scale * 300):
        environ = {"PATH_INFO": f"/items/{i % 50}", "QUERY_STRING": "&".join(f"id={j}" for j in range(i % 10))}
        setup_testing_defaults(environ)
        seen = {}

        def start_response(status, headers, seen=seen):
            seen["status"] = status
            seen["headers"] = Headers(headers)

        body = b"".join(_wsgi_app(environ, start_response))
        total += len(body) + len(seen["headers"].items())
    return total


def bytes_churn(scale):
    """Grow, slice, join and copy byte buffers from 64 B to 256 KiB (includes large blocks,
    which memscope always samples): a protocol encoder/decoder."""
    total = 0
    for s in range(scale):
        buf = bytearray()
        chunks = []
        for i in range(400):
            piece = bytes([i & 255]) * (64 + (i * 97) % 4000)
            buf += piece
            chunks.append(piece)
        blob = b"".join(chunks)
        view = memoryview(blob)
        parts = [bytes(view[j:j + 1500]) for j in range(0, len(blob), 1500)]
        total += len(buf) + len(blob) + len(parts) + len(bytes(buf[: 256 * 1024]))
    return total


PROGRAMS = {f.__name__: f for f in (json_roundtrip, data_pipeline, text_tokenize, object_graph,
                                    numpy_churn, wsgi_handler, bytes_churn)}

# Iterations for about 0.2-0.4 s each on the 2-core development machine.
SCALE = {"json_roundtrip": 150, "data_pipeline": 40, "text_tokenize": 60, "object_graph": 40,
         "numpy_churn": 30, "wsgi_handler": 20, "bytes_churn": 120}


def run(name, scale):
    return PROGRAMS[name](scale)
