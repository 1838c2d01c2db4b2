"""Signed webhook deliveries, with a guard against requests into the hub's own network (SSRF).

Signature (docs/notifications.md): ``X-Vaultbench-Signature: sha256=<hex>`` where
``hex = HMAC-SHA256(secret, f"{timestamp}.".encode() + body)`` and ``timestamp`` is the
``X-Vaultbench-Timestamp`` header (Unix seconds): a receiver checks the HMAC in constant time
and refuses old timestamps, so a captured delivery cannot be replayed later.

The target's name is resolved once, every address must be public (unless
``VAULTBENCH_WEBHOOK_ALLOW_PRIVATE``), and the connection goes to the address that was checked
(TLS still verifies the name): a DNS answer that changes between check and use cannot redirect
it. Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from django.conf import settings

from marketplace.core.errors import DomainError

USER_AGENT = "Vaultbench-Webhooks/1"
TIMEOUT_SECONDS = 10.0


class TargetRefused(DomainError):
    code = "webhook_target_refused"


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: int, body: bytes, signature: str, *, now: float | None = None, tolerance: int = 300) -> bool:
    """What a receiver does (used by the tests and shown in the docs)."""
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if getattr(settings, "VAULTBENCH_WEBHOOK_ALLOW_PRIVATE", False):
        return not ip.is_multicast and not ip.is_unspecified
    return ip.is_global


def check_target(url: str) -> Target:
    """Parse and resolve ``url``; raises TargetRefused for anything but a public http(s) target."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("A webhook URL must be http:// or https:// with a host name.")
    if parts.username or parts.password:
        raise TargetRefused("A webhook URL must not carry a user name or password.")
    if parts.scheme == "http" and not getattr(settings, "VAULTBENCH_WEBHOOK_ALLOW_HTTP", True):
        raise TargetRefused("Webhooks must use https://.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise TargetRefused(f"The webhook host cannot be resolved: {parts.hostname}.") from exc
    addresses = sorted({info[4][0] for info in infos})
    refused = [a for a in addresses if not _allowed(a)]
    if not addresses or refused:
        raise TargetRefused(
            "The webhook host resolves to a private, loopback or reserved address "
            f"({', '.join(refused) or 'none'}); only public addresses are allowed."
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def post(url: str, *, secret: str, event: str, delivery_id: int, body: bytes) -> int:
    """POST the signed body to the checked address; returns the HTTP status. Raises TargetRefused
    or urllib3 errors (connection, timeout)."""
    target = check_target(url)
    timestamp = int(time.time())
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    headers = {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Vaultbench-Event": event,
        "X-Vaultbench-Delivery": str(delivery_id),
        "X-Vaultbench-Timestamp": str(timestamp),
        "X-Vaultbench-Signature": sign(secret, timestamp, body),
    }
    timeout = urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(), timeout=timeout, retries=False,
        )  # fmt: skip
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False)
    try:
        response = pool.urlopen(
            "POST", target.path, body=body, headers=headers, redirect=False, preload_content=False
        )
        try:
            response.read(4096)  # a receiver's answer is not needed; never read an unbounded one
        finally:
            response.release_conn()
        return int(response.status)
    finally:
        pool.close()
