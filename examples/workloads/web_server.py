"""A WSGI app (wsgiref) on 127.0.0.1 under load from client threads speaking HTTP/1.0 over TCP."""
import http.client
import json
import threading
import time
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

CATALOG = {f"item-{i}": {"id": i, "name": f"Item {i}", "price": round(1.5 * i, 2), "tags": ["a", "b", str(i % 7)]}
           for i in range(500)}


def app(environ, start_response):
    """A tiny catalog API: /item?id=N returns one item, /search?q=S a filtered list."""
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/item":
        key = f"item-{query.get('id', ['0'])[0]}"
        body = CATALOG.get(key)
        status = "200 OK" if body else "404 Not Found"
        payload = json.dumps(body or {"error": "not found"}).encode()
    else:
        q = query.get("q", [""])[0]
        hits = [item for key, item in CATALOG.items() if q in key][:20]
        status, payload = "200 OK", json.dumps({"q": q, "hits": hits}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def _client(port, deadline, counts, index):
    n = 0
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        path = f"/item?id={n % 600}" if n % 3 else f"/search?q={n % 50}"
        conn.request("GET", path, headers={"X-Client": str(index)})
        response = conn.getresponse()
        json.loads(response.read())
        conn.close()
        n += 1
    counts[index] = n


def run(duration_s=1.0, clients=2):
    """Serves the app on an ephemeral port while ``clients`` threads send requests for ``duration_s``."""
    server = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_QuietHandler)
    port = server.server_address[1]
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    deadline = time.monotonic() + duration_s
    counts = [0] * clients
    workers = [threading.Thread(target=_client, args=(port, deadline, counts, i), daemon=True) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    server.shutdown()
    server.server_close()
    serving.join()
    return {"requests": sum(counts)}


if __name__ == "__main__":
    print(run(2.0))
