"""A tiny WSGI app for the pre-fork server test (test_fork.py): each worker reports its own
memscope counters, and the figures its master and its post_fork hook left in STATE."""
import json
import os
import time

import memscope_otel

STATE = {}  # filled by gunicorn_conf.py's hooks; inherited by workers through fork()


def total_allocations():
    snap = memscope_otel.snapshot()
    return None if snap is None else int(snap.counters.allocations.sum())


def app(environ, start_response):
    time.sleep(0.3)  # a sync worker serves one request at a time: concurrent ones spread out
    from memscope_otel import tracker

    current = tracker.current()
    body = dict(STATE, pid=os.getpid(), own_now=total_allocations(),
                drainer_alive=bool(current and current.drainer._thread and current.drainer._thread.is_alive()))
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
