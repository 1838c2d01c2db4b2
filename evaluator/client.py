"""HTTP client for the hub's site-agent API (docs/site-agent-api.md).

One exception tree: ``HubError`` → ``HubUnreachable`` (connection errors and 5xx after bounded
retries), ``LeaseLost`` (409: another agent holds the job or its lease is gone), ``HubRejected``
(any other 4xx or 3xx; never retried), ``ArtifactTooLarge`` (the download passed its size cap).

Connection errors, timeouts and 5xx are retried with exponential backoff and jitter; 4xx never
are. Result and failure posts are safe to retry because the hub treats a repeat as a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/agent"
ROUND_STEPS = ("keys", "shares", "masked", "unmask", "update")
_CHUNK = 1 << 16


class HubError(Exception):
    """Base class of every error the hub client raises."""


class HubUnreachable(HubError):
    """The hub did not answer usefully (connection error, timeout or 5xx) after all retries."""


class LeaseLost(HubError):
    """The job's lease is gone (409): stop working on it and post nothing."""


class HubRejected(HubError):
    """The hub refused the request (4xx other than 409, or an unexpected redirect)."""

    def __init__(self, status: int, code: str = "", message: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"hub answered {status} {code}: {message}".rstrip(": "))


class ArtifactTooLarge(HubError):
    """The artifact download passed its byte cap; the partial file was removed."""


class _BearerAuth(requests.auth.AuthBase):
    # As session.auth (not a default header) so a ~/.netrc entry can never replace the token.
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r


def canonical_json(obj: Any) -> bytes:
    """The exact bytes the agent sends for a JSON body (and records in its ledger)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


class HubClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        agent_id: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.agent_id = agent_id or f"agent-{uuid.uuid4().hex[:16]}"
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.session = session or requests.Session()
        self.session.auth = _BearerAuth(token)
        self.session.headers["User-Agent"] = "vaultbench-site-agent/1"

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> HubClient:
        retry = config.retry
        return cls(
            config.hub_url,
            config.site_token,
            timeout=retry.request_timeout_seconds,
            max_attempts=retry.max_attempts,
            backoff_base=retry.backoff_base_seconds,
            backoff_max=retry.backoff_max_seconds,
            **kwargs,
        )

    def __repr__(self) -> str:  # never show the token
        return f"HubClient({self.base_url!r}, agent_id={self.agent_id!r})"

    # --- the API --------------------------------------------------------------------------

    def heartbeat(
        self, capabilities: Mapping[str, Any] | None = None, *, health: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_id": self.agent_id, "capabilities": dict(capabilities or {})}
        if health is not None:
            body["health"] = dict(health)
        return self._json("POST", "/heartbeat", body)

    def register_shard(
        self,
        *,
        task_id: int | str,
        row_count: int,
        fingerprint: str,
        split_sizes: Mapping[str, int],
    ) -> dict[str, Any]:
        body = {
            "task": task_id,
            "row_count": row_count,
            "fingerprint": fingerprint,
            "split_sizes": dict(split_sizes),
        }
        return self._json("POST", "/shards", body)

    def claim(self) -> dict[str, Any] | None:
        """The next job for this site, or None when nothing is queued (204)."""
        resp = self._request("POST", "/jobs/claim", canonical_json({"agent_id": self.agent_id}))
        if resp.status_code == 204:
            return None
        data = _parse_json(resp)
        job = data.get("job")
        if not isinstance(job, dict) or "id" not in job:
            raise HubError("claim answer has no job")
        return job

    def renew_lease(self, job_id: int | str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/lease", {"agent_id": self.agent_id})

    def download_artifact(self, job_id: int | str, dest: str | os.PathLike[str], *, max_bytes: int) -> Path:
        """Stream the job's artifact into ``dest``; never more than ``max_bytes`` bytes."""
        return self._download(f"/jobs/{job_id}/artifact", dest, max_bytes=max_bytes)

    def post_result(self, job_id: int | str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Post a result body (``agent_id``, ``metrics``, ``n_rows``, ``ledger``) as given."""
        return self._json("POST", f"/jobs/{job_id}/result", body)

    def post_failure(self, job_id: int | str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Post a failure body (``agent_id``, ``reason``) as given."""
        return self._json("POST", f"/jobs/{job_id}/failure", body)

    def post_private_result(self, job_id: int | str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Post the private-split metrics of a job whose task has closed."""
        return self._json("POST", f"/jobs/{job_id}/private-result", body)

    def hold(self, job_id: int | str) -> dict[str, Any]:
        """Tell the hub this site holds the job's result for the owner's release decision."""
        return self._json("POST", f"/jobs/{job_id}/hold", {"agent_id": self.agent_id})

    def pending_work(self) -> dict[str, Any]:
        """Release decisions made on the hub, and jobs whose private scores may now leave."""
        return self._json("GET", "/pending", None)

    def receipts(self) -> list[dict[str, Any]]:
        """Every receipt the hub holds for this site's releases (its mirror of the ledger)."""
        out: list[dict[str, Any]] = []
        after: Any = 0
        while True:
            page = self._json("GET", f"/receipts?after={after}&limit=1000", None)
            receipts = page.get("receipts")
            if not isinstance(receipts, list):
                raise HubError("receipts answer has no list")
            out += [r for r in receipts if isinstance(r, dict)]
            after = page.get("next_after")
            if not isinstance(after, int) or isinstance(after, bool):
                return out

    def download_weights_offset(
        self, job_id: int | str, dest: str | os.PathLike[str], *, max_bytes: int
    ) -> Path:
        """A fine-tuned submission's weights offset (safetensors), streamed like the artifact."""
        return self._download(f"/jobs/{job_id}/weights-offset", dest, max_bytes=max_bytes)

    # --- federated fine-tuning (docs/federated-protocol.md) -------------------------------

    def run_state(self, run_id: int | str, *, since: str | None = None, wait: float = 0.0) -> dict[str, Any]:
        """What this site must do now in a fine-tuning run (status, round, phase, ...).

        With ``since`` (the ``version`` of the last state) and ``wait`` > 0 it is a long poll:
        the hub may hold the answer up to ``wait`` seconds until the version changes (it answers
        at once where it cannot hold requests: see docs/federated-protocol.md)."""
        path = f"/runs/{run_id}/state"
        if since is not None and wait > 0:
            wait = min(wait, max(0.0, self.timeout - 5.0))  # the answer must come before our timeout
            path += "?" + urlencode({"since": since, "wait": f"{wait:.3f}"})
        return self._json("GET", path, None)

    def download_round_offset(
        self, run_id: int | str, round_number: int, dest: str | os.PathLike[str], *, max_bytes: int
    ) -> Path:
        """``D_r`` of a round (safetensors)."""
        return self._download(f"/runs/{run_id}/rounds/{round_number}/offset", dest, max_bytes=max_bytes)

    def post_layout(self, run_id: int | str, layout: Any, n_examples: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_id": self.agent_id, "layout": layout}
        if n_examples is not None:
            body["n_examples"] = int(n_examples)
        return self._json("POST", f"/runs/{run_id}/layout", body)

    def post_round(
        self, run_id: int | str, round_number: int, step: str, body: Mapping[str, Any], *, wait: float = 0.0
    ) -> dict[str, Any]:
        """POST ``/runs/{run}/rounds/{r}/{step}``; ``step``: keys, shares, masked, unmask, update.
        ``body`` is sent as given (masked/update bodies carry their ledger receipt). With ``wait``
        > 0 the hub may hold the answer until the phase changes (like ``run_state``'s long poll),
        so its state is the next phase's."""
        if step not in ROUND_STEPS:
            raise ValueError(f"unknown round step {step!r}")
        path = f"/runs/{run_id}/rounds/{round_number}/{step}"
        if wait > 0:
            path += "?" + urlencode({"wait": f"{min(wait, max(0.0, self.timeout - 5.0)):.3f}"})
        return self._json("POST", path, body)

    # --- plumbing -------------------------------------------------------------------------

    def _download(self, path: str, dest: str | os.PathLike[str], *, max_bytes: int) -> Path:
        dest = Path(dest)
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self._request("GET", path, None, stream=True, retries=1) as resp:
                    length = resp.headers.get("Content-Length")
                    if length is not None and length.isdigit() and int(length) > max_bytes:
                        raise ArtifactTooLarge(f"{path} is {length} bytes; the cap is {max_bytes}")
                    written = 0
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        for chunk in resp.iter_content(_CHUNK):
                            written += len(chunk)
                            if written > max_bytes:
                                raise ArtifactTooLarge(f"{path} exceeds the cap of {max_bytes} bytes")
                            fh.write(chunk)
                return dest
            except ArtifactTooLarge:
                dest.unlink(missing_ok=True)
                raise
            except (HubUnreachable, requests.RequestException) as exc:
                # A broken stream restarts the download from the first byte.
                dest.unlink(missing_ok=True)
                if attempt == self.max_attempts:
                    raise HubUnreachable(f"download of {path} failed: {_describe(exc)}") from None
                self._backoff(attempt, f"GET {path}", exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        resp = self._request(method, path, None if body is None else canonical_json(body))
        return _parse_json(resp)

    def _request(
        self,
        method: str,
        path: str,
        data: bytes | None,
        *,
        stream: bool = False,
        retries: int | None = None,
    ) -> requests.Response:
        url = f"{self.base_url}{API_PREFIX}{path}"
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempts = self.max_attempts if retries is None else retries
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                resp = self.session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                    stream=stream,
                    allow_redirects=False,  # a redirect could carry the token elsewhere
                )
            except requests.RequestException as exc:
                last = exc
            else:
                if resp.status_code < 300:
                    return resp
                if resp.status_code >= 500:
                    last = HubUnreachable(f"{method} {path}: hub answered {resp.status_code}")
                    resp.close()
                else:
                    code, message = _error_of(resp)
                    resp.close()
                    if resp.status_code == 409:
                        raise LeaseLost(f"{method} {path}: {code or 'conflict'}")
                    raise HubRejected(resp.status_code, code, message)
            if attempt < attempts:
                self._backoff(attempt, f"{method} {path}", last)
        assert last is not None
        if isinstance(last, HubUnreachable):
            raise last
        raise HubUnreachable(f"{method} {path}: {_describe(last)}") from None

    def backoff_delay(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based): exponential, capped, equal jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _backoff(self, attempt: int, what: str, exc: Exception | None) -> None:
        delay = self.backoff_delay(attempt)
        log.warning("%s failed (%s); retry %d in %.1fs", what, _describe(exc), attempt, delay)
        self._sleep(delay)


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _error_of(resp: requests.Response) -> tuple[str, str]:
    try:
        err = resp.json().get("error", {})
        return str(err.get("code", ""))[:100], str(err.get("message", ""))[:500]
    except (ValueError, AttributeError):
        return "", ""


def _parse_json(resp: requests.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise HubError(f"hub answered {resp.status_code} with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise HubError("hub answered with JSON that is not an object")
    return data
