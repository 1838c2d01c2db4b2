"""HubClient against a real local HTTP server.

The server here is a deliberately small fake of the hub's agent API (docs/site-agent-api.md),
only for client retry/backoff/error-mapping unit tests; the real hub is tested end-to-end with
the agent elsewhere.
"""

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evaluator.client import (
    ArtifactTooLarge,
    HubClient,
    HubRejected,
    HubUnreachable,
    LeaseLost,
    canonical_json,
)

TOKEN = "vbs_test_token_123"


class FakeHub:
    """Scripted responses per (method, path); each entry is a list consumed in order (the last
    one repeats). A response is (status, body) where body is a dict, bytes or None, or a
    callable(handler) that writes the response itself."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                script = hub.routes.get((self.command, self.path))
                if not script:
                    return self._send(404, {"error": {"code": "not_found", "message": "no route"}})
                response = script.pop(0) if len(script) > 1 else script[0]
                if callable(response):
                    return response(self)
                self._send(*response)

            def _send(self, status, body=None, headers=None):
                data = (
                    body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
                )
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if status != 204:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if status != 204:
                    self.wfile.write(data)

            do_GET = do_POST = _serve

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that timed out leaves a broken pipe: expected here

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def route(self, method, path, *responses):
        self.routes[(method, "/api/v1/agent" + path)] = list(responses)

    def calls(self, method, path):
        return [r for r in self.requests if r["method"] == method and r["path"] == "/api/v1/agent" + path]


@pytest.fixture
def hub():
    fake = FakeHub()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(hub, sleeps):
    return HubClient(
        hub.url,
        TOKEN,
        agent_id="agent-test",
        timeout=2,
        max_attempts=4,
        backoff_base=0.5,
        backoff_max=3,
        sleep=sleeps.append,
        rng=random.Random(0),
    )


def test_every_call_carries_the_bearer_site_token(hub, client):
    hub.route("POST", "/heartbeat", (200, {"site": {"id": 1, "name": "s"}, "server_time": "t"}))
    answer = client.heartbeat({"formats": ["onnx"]})
    assert answer["site"]["id"] == 1
    [req] = hub.requests
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(req["body"]) == {
        "agent_id": "agent-test",
        "capabilities": {"formats": ["onnx"]},
    }


def test_the_token_is_not_in_the_clients_repr(client):
    assert TOKEN not in repr(client)


def test_claim_returns_none_on_204(hub, client):
    hub.route("POST", "/jobs/claim", (204, None))
    assert client.claim() is None
    assert json.loads(hub.requests[0]["body"]) == {"agent_id": "agent-test"}


def test_claim_returns_the_job(hub, client):
    hub.route("POST", "/jobs/claim", (200, {"job": {"id": 12, "kind": "evaluate"}}))
    assert client.claim() == {"id": 12, "kind": "evaluate"}


def test_register_shard_posts_the_metadata(hub, client):
    hub.route("POST", "/shards", (201, {"task": 3}))
    client.register_shard(task_id=3, row_count=10, fingerprint="ab" * 32, split_sizes={"test": 10})
    assert json.loads(hub.requests[0]["body"]) == {
        "task": 3,
        "row_count": 10,
        "fingerprint": "ab" * 32,
        "split_sizes": {"test": 10},
    }


def test_5xx_is_retried_with_growing_jittered_backoff(hub, client, sleeps):
    hub.route("POST", "/heartbeat", (503, None), (502, None), (500, None), (200, {"site": {}}))
    client.heartbeat()
    assert len(hub.requests) == 4
    assert len(sleeps) == 3
    # equal jitter: each delay lies in [ceiling/2, ceiling], ceiling = min(3, 0.5 * 2**n)
    for n, delay in enumerate(sleeps):
        ceiling = min(3, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling


def test_retries_are_bounded_then_hub_unreachable(hub, client, sleeps):
    hub.route("POST", "/heartbeat", (503, None))
    with pytest.raises(HubUnreachable):
        client.heartbeat()
    assert len(hub.requests) == 4 and len(sleeps) == 3


def test_backoff_never_exceeds_its_cap(client):
    assert all(client.backoff_delay(n) <= 3 for n in range(1, 30))


def test_connection_refused_is_retried_then_unreachable(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    client = HubClient(f"http://127.0.0.1:{port}", TOKEN, max_attempts=3, sleep=sleeps.append, timeout=1)
    with pytest.raises(HubUnreachable):
        client.claim()
    assert len(sleeps) == 2


def test_a_read_timeout_is_retried(hub, sleeps):
    def slow(handler):
        time.sleep(1.5)
        handler._send(200, {"site": {}})

    hub.route("POST", "/heartbeat", slow, (200, {"site": {"id": 9}}))
    client = HubClient(hub.url, TOKEN, timeout=0.5, max_attempts=3, sleep=sleeps.append)
    assert client.heartbeat()["site"] == {"id": 9}
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_4xx_is_never_retried(hub, client, sleeps, status):
    hub.route("POST", "/heartbeat", (status, {"error": {"code": "nope", "message": "refused"}}))
    with pytest.raises(HubRejected) as exc:
        client.heartbeat()
    assert exc.value.status == status and exc.value.code == "nope" and exc.value.message == "refused"
    assert len(hub.requests) == 1 and sleeps == []


def test_409_on_lease_is_lease_lost(hub, client, sleeps):
    hub.route("POST", "/jobs/12/lease", (409, {"error": {"code": "lease_lost", "message": ""}}))
    with pytest.raises(LeaseLost):
        client.renew_lease(12)
    assert len(hub.requests) == 1 and sleeps == []


def test_renew_lease_returns_the_new_expiry(hub, client):
    hub.route("POST", "/jobs/12/lease", (200, {"lease_expires_at": "2026-11-22T19:00:00Z"}))
    assert client.renew_lease(12) == {"lease_expires_at": "2026-11-22T19:00:00Z"}


def test_redirects_are_not_followed(hub, client):
    hub.route("POST", "/heartbeat", (302, None))
    hub.routes[("POST", "/api/v1/agent/heartbeat")] = [
        lambda h: h._send(302, b"", {"Location": "http://evil.example/steal"})
    ]
    with pytest.raises(HubRejected):
        client.heartbeat()
    assert len(hub.requests) == 1


def test_post_result_sends_canonical_json_bytes(hub, client):
    hub.route("POST", "/jobs/12/result", (200, {"job": {"id": 12}}))
    body = {
        "agent_id": "agent-test",
        "metrics": {"roc_auc": 0.9123},
        "n_rows": 10,
        "ledger": {"sha256": "x", "bytes": 3},
    }
    client.post_result(12, body)
    assert hub.requests[0]["body"] == canonical_json(body)
    assert hub.requests[0]["headers"]["Content-Type"] == "application/json"


def test_a_timed_out_post_is_retried_with_the_same_payload(hub, sleeps):
    def slow(handler):
        time.sleep(1.5)
        handler._send(200, {"job": {}})

    hub.route("POST", "/jobs/5/failure", slow, (200, {"job": {"id": 5}}))
    client = HubClient(hub.url, TOKEN, timeout=0.5, max_attempts=3, sleep=sleeps.append)
    client.post_failure(5, {"agent_id": "a", "reason": "timeout"})
    bodies = [r["body"] for r in hub.calls("POST", "/jobs/5/failure")]
    assert len(bodies) == 2 and bodies[0] == bodies[1]


def test_409_on_result_is_lease_lost(hub, client):
    hub.route("POST", "/jobs/5/result", (409, {"error": {"code": "lease_lost", "message": ""}}))
    with pytest.raises(LeaseLost):
        client.post_result(5, {"agent_id": "a", "metrics": {}, "n_rows": 1})


def test_artifact_download_streams_to_a_private_file(hub, client, tmp_path):
    data = bytes(range(256)) * 1000
    hub.route("GET", "/jobs/7/artifact", (200, data))
    dest = client.download_artifact(7, tmp_path / "artifact", max_bytes=len(data))
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o077 == 0


def test_artifact_over_the_declared_length_cap_is_refused_before_reading(hub, client, tmp_path):
    hub.route("GET", "/jobs/7/artifact", (200, b"x" * 5000))
    with pytest.raises(ArtifactTooLarge):
        client.download_artifact(7, tmp_path / "artifact", max_bytes=4999)
    assert not (tmp_path / "artifact").exists()


def test_artifact_cap_holds_without_a_content_length(hub, client, tmp_path):
    def chunked(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b"y" * 1024)
        handler.close_connection = True

    hub.route("GET", "/jobs/7/artifact", chunked)
    with pytest.raises(ArtifactTooLarge):
        client.download_artifact(7, tmp_path / "artifact", max_bytes=10_000)
    assert not (tmp_path / "artifact").exists()


def test_artifact_download_retries_5xx_and_maps_409(hub, client, tmp_path, sleeps):
    hub.route("GET", "/jobs/7/artifact", (503, None), (200, b"model"))
    assert client.download_artifact(7, tmp_path / "a", max_bytes=100).read_bytes() == b"model"
    assert len(sleeps) == 1
    hub.route("GET", "/jobs/8/artifact", (409, {"error": {"code": "lease_lost", "message": ""}}))
    with pytest.raises(LeaseLost):
        client.download_artifact(8, tmp_path / "b", max_bytes=100)


def test_a_non_json_answer_is_a_hub_error(hub, client):
    from evaluator.client import HubError

    hub.route("POST", "/heartbeat", (200, b"<html>"))
    with pytest.raises(HubError):
        client.heartbeat()
