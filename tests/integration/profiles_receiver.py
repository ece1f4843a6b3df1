"""An OTLP profiles receiver on the official ``opentelemetry-proto`` stubs: the
``ProfilesService`` on a ``grpc.server`` and ``POST /v1development/profiles`` over HTTP (binary
protobuf, optionally gzip-encoded), as a Collector with the profiles feature gate serves them.
It keeps every request with the headers it came with, and can be told to answer slowly."""
from __future__ import annotations

import base64
import gzip
import http.server
import json
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2, profiles_service_pb2_grpc


class ProfilesReceiver:
    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s
        self.requests = []  # (protocol, headers dict, ExportProfilesServiceRequest)
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.grpc_port = self.http_port = None
        self._grpc = self._http = self._pool = None
        self._stopping = threading.Event()  # ends a slow answer's wait

    def _keep(self, protocol, headers, request):
        if self.delay_s and self._stopping.wait(self.delay_s):
            return  # stopped while answering slowly: the request is not kept
        with self.arrived:
            self.requests.append((protocol, headers, request))
            self.arrived.notify_all()

    def wait(self, n, timeout):
        """The first ``n`` requests, waiting up to ``timeout`` seconds for them (fewer if they do
        not come)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < n and time.monotonic() < deadline:
                self.arrived.wait(max(0.01, deadline - time.monotonic()))
            return list(self.requests[:n])

    def start(self):
        receiver = self

        class Service(profiles_service_pb2_grpc.ProfilesServiceServicer):
            def Export(self, request, context):  # noqa: N802 - the stub's name
                receiver._keep("grpc", dict(context.invocation_metadata()), request)
                return profiles_service_pb2.ExportProfilesServiceResponse()

        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self._grpc = grpc.server(self._pool)
        profiles_service_pb2_grpc.add_ProfilesServiceServicer_to_server(Service(), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1development/profiles":
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = profiles_service_pb2.ExportProfilesServiceRequest()
                request.ParseFromString(body)
                receiver._keep("http", {k.lower(): v for k, v in self.headers.items()}, request)
                reply = profiles_service_pb2.ExportProfilesServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._stopping.set()
        if self._grpc is not None:
            self._grpc.stop(0).wait()
            # (its worker threads would otherwise outlive the test, in later tests' windows)
            self._pool.shutdown(wait=True)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


class ReceiverProcess(ProfilesReceiver):
    """The same receiver in a process of its own, for a test that forks: gRPC does nothing at a
    fork while another thread of the process is inside gRPC (a server's threads always may be),
    and a child that then makes a gRPC call can crash. ``requests`` and ``wait`` as above."""

    def start(self):
        self._proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True)
        self.grpc_port, self.http_port = json.loads(self._proc.stdout.readline())
        threading.Thread(target=self._forwarded, daemon=True).start()
        return self

    def _forwarded(self):
        for line in self._proc.stdout:
            protocol, headers, body = json.loads(line)
            request = profiles_service_pb2.ExportProfilesServiceRequest()
            request.ParseFromString(base64.b64decode(body))
            self._keep(protocol, headers, request)

    def stop(self):
        self._proc.stdin.close()  # the process ends at the end of its input
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _forward_requests():
    """ReceiverProcess's process: the ports, then each request on a line of its own."""
    printing = threading.Lock()

    class Forwarding(ProfilesReceiver):
        def _keep(self, protocol, headers, request):
            line = json.dumps([protocol, {k: str(v) for k, v in headers.items()},
                               base64.b64encode(request.SerializeToString()).decode()])
            with printing:
                print(line, flush=True)

    receiver = Forwarding().start()
    print(json.dumps([receiver.grpc_port, receiver.http_port]), flush=True)
    sys.stdin.read()
    receiver.stop()


if __name__ == "__main__":
    _forward_requests()
