"""First in the middleware stack: answers the probes and /metrics before host checks, HTTPS
redirects, sessions or CSRF (a kubelet or a load balancer probes by IP, over plain HTTP), and
counts and times every other request; binds the request's ids to the log context."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
import uuid

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from evaluator.jsonlog import bind, reset

access = logging.getLogger("marketplace.access")
PROBES = ("/healthz", "/readyz", "/metrics")
CONTEXT_KWARGS = {"job_id": "job", "task_id": "task", "run_id": "run", "submission_id": "submission"}


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def metrics_allowed(request) -> bool:
    """With VAULTBENCH_METRICS_TOKEN set: that bearer token; without: loopback callers only.
    Queue depth and site activity are the owners' business, not the public's."""
    token = getattr(settings, "VAULTBENCH_METRICS_TOKEN", "")
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    return _loopback(request.META.get("REMOTE_ADDR", ""))


class OpsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info.rstrip("/") or "/"
        if path in PROBES and request.method in ("GET", "HEAD"):
            return self._probe(request, path)
        token = bind(request=request.META.get("HTTP_X_REQUEST_ID", "")[:64] or uuid.uuid4().hex[:16])
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            seconds = time.perf_counter() - started
            access.info("%s %s %s", request.method, request.path, response.status_code, extra={
                "method": request.method, "path": request.path, "status": response.status_code,
                "duration_ms": round(seconds * 1000, 1),
            })  # fmt: skip
        finally:
            reset(token)
        from marketplace.ops.metrics import REQUEST_SECONDS, REQUESTS

        match = getattr(request, "resolver_match", None)
        view = (match.view_name if match else "") or "unmatched"
        method = request.method if request.method in _METHODS else "other"
        REQUESTS.labels(method, view, str(response.status_code)).inc()
        REQUEST_SECONDS.labels(method, view).observe(seconds)
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        ids = {CONTEXT_KWARGS[k]: v for k, v in view_kwargs.items() if k in CONTEXT_KWARGS}
        if ids:
            bind(**ids)  # reset with the request's own token above
        return None

    def _probe(self, request, path):
        if path == "/healthz":
            return JsonResponse({"status": "ok"})
        if path == "/readyz":
            from marketplace.ops.health import readiness

            checks = readiness()
            ready = all(v == "ok" for v in checks.values())
            return HttpResponse(json.dumps({"status": "ok" if ready else "unavailable", "checks": checks}),
                                status=200 if ready else 503, content_type="application/json")  # fmt: skip
        if not metrics_allowed(request):
            return JsonResponse({"error": {"code": "forbidden", "message": "metrics: loopback or the metrics token"}},
                                status=403)  # fmt: skip
        from prometheus_client import CONTENT_TYPE_LATEST

        from marketplace.ops.metrics import exposition

        return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
