"""A real HTTP receiver on loopback for webhook tests (the hub's SSRF guard is opened for it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    answers: list[int] = field(default_factory=list)  # status codes to answer, in order; then 200
    requests: list[Received] = field(default_factory=list)
    redirect_to: str = ""


@pytest.fixture
def receiver():
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)))
            code = state.answers.pop(0) if state.answers else 200
            self.send_response(code)
            if state.redirect_to:
                self.send_header("Location", state.redirect_to)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/hooks/vaultbench"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhooks_on_loopback(settings):
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = True
    settings.VAULTBENCH_WEBHOOK_BACKOFF_SECONDS = 0
    settings.VAULTBENCH_WEBHOOK_MAX_ATTEMPTS = 4
    return settings
