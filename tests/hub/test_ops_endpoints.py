"""Liveness, readiness and Prometheus metrics on the hub; structured JSON logs with ids."""

import io
import json
import logging
import socket

import pytest
from django.test import Client

from evaluator.jsonlog import JsonFormatter, log_context
from tests.conftest import make_task, register_shard
from tests.hub.helpers import claim, submit

pytestmark = pytest.mark.django_db


def _metric(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return None


def test_healthz_answers_any_host_over_plain_http():
    response = Client().get("/healthz", HTTP_HOST="10.244.0.17:8000")  # a kubelet probes the pod's IP
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_the_broker(settings):
    response = Client().get("/readyz/", HTTP_HOST="10.244.0.17")
    assert response.status_code == 200 and response.json()["checks"] == {"database": "ok", "broker": "ok"}
    with socket.socket() as probe:  # a broker nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"
    assert response.json()["checks"]["database"] == "ok" and "Error" in response.json()["checks"]["broker"]


def test_metrics_show_the_queue_jobs_heartbeats_and_requests(owner, vendor, site):
    task = make_task(owner)
    register_shard(site, task)
    submit(vendor, task, name="a")
    submit(vendor, task, name="b")
    claim(site)  # one of the two jobs runs, its site heartbeats
    site.client.post("/api/v1/agent/heartbeat", {"agent_id": "agent-1"}, format="json")
    owner.client.get(f"/api/v1/tasks/{task.id}")
    text = Client().get("/metrics").content.decode()
    assert _metric(text, "vaultbench_job_queue_depth") == 1
    assert _metric(text, "vaultbench_jobs", status="queued", kind="evaluate") == 1
    assert _metric(text, "vaultbench_jobs", status="running", kind="evaluate") == 1
    assert _metric(text, "vaultbench_job_queue_oldest_age_seconds") >= 0
    assert 0 <= _metric(text, "vaultbench_site_heartbeat_age_seconds", site=site.site.name) < 60
    assert _metric(text, "vaultbench_site_last_heartbeat_timestamp_seconds", site=site.site.name) > 1.7e9
    assert _metric(text, "vaultbench_submissions_total") is None  # gauges, not counters
    assert _metric(text, "vaultbench_tasks", status="open") == 1
    assert _metric(text, "vaultbench_http_requests_total", view="api:task", status="200") >= 1
    assert _metric(text, "vaultbench_finetuning_round_duration_seconds_count") == 0


def test_metrics_are_for_loopback_or_the_metrics_token(settings):
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 403
    settings.VAULTBENCH_METRICS_TOKEN = "s3cret-metrics"
    assert Client().get("/metrics").status_code == 403  # with a token set, loopback needs it too
    allowed = Client(REMOTE_ADDR="203.0.113.9").get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics")
    assert allowed.status_code == 200 and b"vaultbench_job_queue_depth" in allowed.content


@pytest.fixture
def json_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("marketplace.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_access_log_lines_carry_the_site_job_and_request_ids(owner, vendor, site, json_log):
    task = make_task(owner)
    register_shard(site, task)
    submit(vendor, task)
    job_id = claim(site)["id"]
    site.client.post(f"/api/v1/agent/jobs/{job_id}/lease", {"agent_id": "agent-1"}, format="json",
                     HTTP_X_REQUEST_ID="req-42")  # fmt: skip
    line = [entry for entry in json_log() if entry.get("path") == f"/api/v1/agent/jobs/{job_id}/lease"][-1]
    assert line["job"] == job_id and line["site"] == site.site.id and line["request"] == "req-42"
    assert line["level"] == "INFO" and line["method"] == "POST" and isinstance(line["duration_ms"], float)


def test_the_json_formatter_writes_the_context_and_the_traceback():
    record = logging.LogRecord("evaluator.agent", logging.ERROR, __file__, 1, "job %s failed", (7,), None)
    with log_context(job=7, task=3, agent="a-1"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            record.exc_info = sys.exc_info()
        entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "job 7 failed" and (entry["job"], entry["task"], entry["agent"]) == (7, 3, "a-1")
    assert "RuntimeError: boom" in entry["exc"] and entry["time"].endswith("Z")
    with pytest.raises(ValueError, match="unknown log context"):
        with log_context(jobb=1):
            pass
