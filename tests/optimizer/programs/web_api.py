"""A JSON API on http.server's ThreadingHTTPServer, driven by urllib clients with POST bodies."""
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERS = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        USERS[body["name"]] = {"name": body["name"], "age": body["age"], "friends": body.get("friends", [])}
        self._send(201, {"created": body["name"], "count": len(USERS)})

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        user = USERS.get(name)
        self._send(200 if user else 404, user or {"error": name})

    def _send(self, status, obj):
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _client(base, deadline, index):
    i = 0
    while time.monotonic() < deadline:
        name = f"user{index}-{i % 40}"
        data = json.dumps({"name": name, "age": i % 90, "friends": [f"f{j}" for j in range(i % 5)]}).encode()
        req = urllib.request.Request(f"{base}/users", data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as response:
            response.read()
        try:
            with urllib.request.urlopen(f"{base}/users/{name}", timeout=5) as response:
                json.loads(response.read())
        except urllib.error.HTTPError:
            pass
        i += 1


def run(duration_s=1.0):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    deadline = time.monotonic() + duration_s
    clients = [threading.Thread(target=_client, args=(base, deadline, i), daemon=True) for i in range(2)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    server.shutdown()
    server.server_close()
    return {"users": len(USERS)}
