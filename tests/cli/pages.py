"""A loopback HTTP server that serves a page made by a function, for ``top --url`` tests."""
from __future__ import annotations

import http.server
import threading


class PageServer:
    """Serves ``make_page()`` (text) on every GET, on 127.0.0.1 and a port the kernel picks."""

    def __init__(self, make_page, content_type="text/plain; version=0.0.4; charset=utf-8"):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                body = outer.make_page().encode()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.make_page = make_page
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def growing_memscope_page():
    """A function giving a memscope page whose counters grow at every request: 1000 allocations
    of 64 KiB per request, all at the site ``worker.py:grow_buffers:12``."""
    calls = [0]

    def page():
        calls[0] += 1
        n = 1000 * calls[0]
        site = ('code_file_path="/srv/worker.py",code_function_name="grow_buffers",code_line_number="12",'
                'memscope_domain="obj"')
        return "\n".join([
            "# TYPE memscope_allocations_total counter",
            f'memscope_allocations_total{{memscope_domain="obj",memscope_size_class="large"}} {n}',
            "# TYPE memscope_allocated_bytes_total counter",
            f'memscope_allocated_bytes_total{{memscope_domain="obj",memscope_size_class="large"}} {n * 65536}',
            "# TYPE memscope_site_allocated_bytes_total counter",
            f"memscope_site_allocated_bytes_total{{{site}}} {n * 65536}",
            "# TYPE memscope_site_allocations_total counter",
            f"memscope_site_allocations_total{{{site}}} {n}",
            "# TYPE memscope_site_live_bytes gauge",
            f"memscope_site_live_bytes{{{site}}} {65536 * 10}",
            "# TYPE memscope_live_bytes gauge",
            f'memscope_live_bytes{{memscope_domain="obj"}} {65536 * 10}',
            "# TYPE memscope_sampler_rate gauge",
            'memscope_sampler_rate{memscope_size_class="small"} 0.001',
            "",
        ])

    return page
