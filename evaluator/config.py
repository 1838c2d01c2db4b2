"""Site agent configuration: a TOML file, overridden by environment variables.

Every key and environment variable is documented in docs/site-operator.md (a test keeps the
two in step); ``vaultbench-site init`` writes a commented file. Example ``site.toml``::

    hub_url = "https://hub.example.org"
    site_token_file = "/etc/vaultbench/site-token"   # or site_token = "vbs_..."
    data_dir = "/var/lib/vaultbench"
    work_dir = "/var/lib/vaultbench/work"            # default: <data_dir>/work
    image = "sha256:..."                             # optional pinned runner image
    poll_interval_seconds = 10
    lease_renew_interval_seconds = 20                # default: the job's lease_seconds / 3
    min_free_disk_mb = 512      # below this free in work_dir (or data_dir) the agent claims nothing
    sandbox_runtime = "runc"    # or "runsc" (gVisor), when the engine has it (docs/sandbox.md)
    pool_size = 1               # warm sandboxes per (image, format, limits); 0: every job cold
    pool_memory_mb = 4096       # the idle pool's memory limits, summed, stay below this
    compile_models = true       # numpy-only form of linear scikit-learn models for their later jobs

    [limits]              # the SITE's maximums; a job spec can never loosen them
    max_memory_mb = 4096
    max_cpus = 2.0
    max_timeout_seconds = 1800
    max_output_mb = 256
    max_artifact_mb = 1024
    on_excess = "refuse"  # or "clamp"
    max_epsilon_per_release = 2.0   # a task asking more epsilon per release is refused
    max_vendor_epsilon = 20.0       # per (task, vendor organization, split), at this site
    max_task_epsilon = 50.0         # per (task, split), all vendors together, at this site

    [retry]
    max_attempts = 5
    backoff_base_seconds = 0.5
    backoff_max_seconds = 30
    request_timeout_seconds = 30

Environment overrides: ``VAULTBENCH_HUB_URL``, ``VAULTBENCH_SITE_TOKEN``,
``VAULTBENCH_DATA_DIR``, ``VAULTBENCH_WORK_DIR``, ``VAULTBENCH_IMAGE``,
``VAULTBENCH_POLL_INTERVAL``, ``VAULTBENCH_LEASE_RENEW_INTERVAL``, ``VAULTBENCH_POOL_SIZE``,
``VAULTBENCH_POOL_MEMORY_MB``, ``VAULTBENCH_MAX_MEMORY_MB``,
``VAULTBENCH_MAX_CPUS``, ``VAULTBENCH_MAX_TIMEOUT_SECONDS``, ``VAULTBENCH_MAX_OUTPUT_MB``,
``VAULTBENCH_MAX_ARTIFACT_MB``, ``VAULTBENCH_LIMITS_ON_EXCESS``,
``VAULTBENCH_MAX_EPSILON_PER_RELEASE``, ``VAULTBENCH_MAX_VENDOR_EPSILON``,
``VAULTBENCH_MAX_TASK_EPSILON``.

Security decision (resource limits): the hub's job spec carries the task's resource limits, but
the hub is not trusted to set the sandbox's bounds. Every requested value is checked against the
site's caps above. With ``on_excess = "refuse"`` (the default) a job asking for more than a cap
fails with the coarse reason ``policy_violation`` — a visible misconfiguration rather than a
silently different run. With ``"clamp"`` the value is lowered to the cap and the job runs. Either
way the sandbox never gets more than the site allows.

Security decision (privacy): a site releases only noised statistics (docs/disclosure.md). The
job's task states its epsilon per release and its budgets; the site refuses
(``policy_violation``) a task asking more than ``max_epsilon_per_release`` per release, and keeps
its own budget file whose caps are the smaller of the hub's and ``max_vendor_epsilon`` /
``max_task_epsilon`` (both at the task's delta, per split). A compromised hub cannot make the
site release more. ``max_decimals`` is no longer used (nothing is rounded); an old config that
sets it still loads.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A missing or bad configuration value; the message names the setting."""


ON_EXCESS_CHOICES = ("refuse", "clamp")


@dataclass(frozen=True)
class LimitCaps:
    """The site's own maximums for one sandbox run."""

    max_memory_mb: int = 4096
    max_cpus: float = 2.0
    max_timeout_seconds: int = 1800
    max_output_mb: int = 256
    max_artifact_mb: int = 1024
    on_excess: str = "refuse"
    max_epsilon_per_release: float = 2.0
    max_vendor_epsilon: float = 20.0
    max_task_epsilon: float = 50.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for calls to the hub."""

    max_attempts: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    request_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class AgentConfig:
    hub_url: str
    site_token: str = field(repr=False)
    data_dir: Path
    work_dir: Path
    image: str | None = None
    poll_interval_seconds: float = 10.0
    lease_renew_interval_seconds: float | None = None
    batch_size: int = 4096
    allow_insecure_http: bool = False
    min_free_disk_mb: int = 512  # the agent claims nothing while work_dir or data_dir has less free
    sandbox_runtime: str = "runc"  # the engine's OCI runtime for sandboxes: runc or runsc (gVisor)
    # The warm pool (evaluator/sandbox_pool.py): containers started ahead per (image, format,
    # limits), each for one job. 0 turns it off; every job then starts its container cold.
    pool_size: int = 1
    pool_memory_mb: int = 4096  # bound on the sum of the idle pooled containers' memory limits
    # With the pool: a scikit-learn model's first job on a shard also converts it to a numpy-only
    # form its later jobs there run (evaluator/compiled_models.py).
    compile_models: bool = True
    limits: LimitCaps = field(default_factory=LimitCaps)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "ledger.jsonl"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "agent-state.json"

    @property
    def budget_path(self) -> Path:
        return self.data_dir / "site-budget.json"


# --- small strict parsers -------------------------------------------------------------------


def _positive_number(name: str, value: Any, *, integer: bool = False) -> Any:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return int(value) if integer else float(value)


def _non_negative_int(name: str, value: Any) -> int:
    """An integer >= 0 (0 switches a feature off)."""
    if value in (0, "0"):
        return 0
    return int(_positive_number(name, value, integer=True))


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hub_url(value: Any, *, allow_insecure_http: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("hub_url is required (set it in the config file or VAULTBENCH_HUB_URL)")
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"hub_url must be an http(s) URL with a host, got {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError("hub_url must not carry credentials, a query or a fragment")
    # The site token travels in every request: plain HTTP only to this machine.
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ConfigError(
            "hub_url uses plain http to a remote host; use https "
            "(or set allow_insecure_http = true for a test network)"
        )
    return url


def _site_token(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("site token is required (site_token, site_token_file or VAULTBENCH_SITE_TOKEN)")
    token = value.strip()
    if token.startswith("vbp_"):
        raise ConfigError("the token is a personal token (vbp_...); the agent needs a site token (vbs_...)")
    if not token.startswith("vbs_") or len(token) < 8 or any(c.isspace() for c in token):
        raise ConfigError("the site token must look like vbs_... (no spaces)")
    return token


def _section(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return dict(value)


_TOP_KEYS = {
    "hub_url",
    "site_token",
    "site_token_file",
    "data_dir",
    "work_dir",
    "image",
    "poll_interval_seconds",
    "lease_renew_interval_seconds",
    "batch_size",
    "allow_insecure_http",
    "min_free_disk_mb",
    "sandbox_runtime",
    "pool_size",
    "pool_memory_mb",
    "compile_models",
    "limits",
    "retry",
}
_LIMIT_KEYS = set(LimitCaps.__dataclass_fields__)
_RETIRED_LIMIT_KEYS = {"max_decimals"}  # accepted and ignored: old configs keep loading
_RETRY_KEYS = set(RetryPolicy.__dataclass_fields__)

_ENV_TOP = {
    "VAULTBENCH_HUB_URL": "hub_url",
    "VAULTBENCH_SITE_TOKEN": "site_token",
    "VAULTBENCH_DATA_DIR": "data_dir",
    "VAULTBENCH_WORK_DIR": "work_dir",
    "VAULTBENCH_IMAGE": "image",
    "VAULTBENCH_POLL_INTERVAL": "poll_interval_seconds",
    "VAULTBENCH_LEASE_RENEW_INTERVAL": "lease_renew_interval_seconds",
    "VAULTBENCH_MIN_FREE_DISK_MB": "min_free_disk_mb",
    "VAULTBENCH_SANDBOX_RUNTIME": "sandbox_runtime",
    "VAULTBENCH_POOL_SIZE": "pool_size",
    "VAULTBENCH_POOL_MEMORY_MB": "pool_memory_mb",
    "VAULTBENCH_COMPILE_MODELS": "compile_models",
}
_ENV_LIMITS = {
    "VAULTBENCH_MAX_MEMORY_MB": "max_memory_mb",
    "VAULTBENCH_MAX_CPUS": "max_cpus",
    "VAULTBENCH_MAX_TIMEOUT_SECONDS": "max_timeout_seconds",
    "VAULTBENCH_MAX_OUTPUT_MB": "max_output_mb",
    "VAULTBENCH_MAX_ARTIFACT_MB": "max_artifact_mb",
    "VAULTBENCH_LIMITS_ON_EXCESS": "on_excess",
    "VAULTBENCH_MAX_EPSILON_PER_RELEASE": "max_epsilon_per_release",
    "VAULTBENCH_MAX_VENDOR_EPSILON": "max_vendor_epsilon",
    "VAULTBENCH_MAX_TASK_EPSILON": "max_task_epsilon",
}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    require_hub: bool = True,
) -> AgentConfig:
    """Read ``path`` (TOML; optional), apply ``VAULTBENCH_*`` overrides, validate.

    ``require_hub=False`` is for commands that only touch local files (ledger export): the hub
    URL and token may then be missing.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        base_dir = p.resolve().parent
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in config: {', '.join(sorted(unknown))} "
            f"(valid keys: {', '.join(sorted(_TOP_KEYS))}; docs/site-operator.md)"
        )
    limits_raw = _section(raw, "limits")
    for retired in _RETIRED_LIMIT_KEYS & set(limits_raw):
        limits_raw.pop(retired)
    retry_raw = _section(raw, "retry")
    for name, section, allowed in (
        ("limits", limits_raw, _LIMIT_KEYS),
        ("retry", retry_raw, _RETRY_KEYS),
    ):
        extra = set(section) - allowed
        if extra:
            raise ConfigError(
                f"unknown setting(s) in [{name}]: {', '.join(sorted(extra))} "
                f"(valid keys: {', '.join(sorted(allowed))}; docs/site-operator.md)"
            )

    for var, key in _ENV_TOP.items():
        if env.get(var):
            raw[key] = env[var]
            if key == "site_token":
                raw.pop("site_token_file", None)
    for var, key in _ENV_LIMITS.items():
        if env.get(var):
            limits_raw[key] = env[var]

    def resolve(value: Any, name: str) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a path")
        pth = Path(value).expanduser()
        return pth if pth.is_absolute() else (base_dir / pth)

    allow_http = _bool("allow_insecure_http", raw.get("allow_insecure_http", False))

    token_value = raw.get("site_token")
    if token_value is None and raw.get("site_token_file"):
        token_file = resolve(raw["site_token_file"], "site_token_file")
        try:
            token_value = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read site_token_file {token_file}: {exc.strerror}") from None
    if require_hub:
        hub_url = _hub_url(raw.get("hub_url"), allow_insecure_http=allow_http)
        token = _site_token(token_value)
    else:
        hub_url = _hub_url(raw["hub_url"], allow_insecure_http=allow_http) if raw.get("hub_url") else ""
        token = _site_token(token_value) if token_value else ""

    if "data_dir" not in raw:
        raise ConfigError("data_dir is required (set it in the config file or VAULTBENCH_DATA_DIR)")
    data_dir = resolve(raw["data_dir"], "data_dir")
    work_dir = resolve(raw["work_dir"], "work_dir") if raw.get("work_dir") else data_dir / "work"

    image = raw.get("image")
    if image is not None:
        if not isinstance(image, str):
            raise ConfigError("image must be a string (an image id or a pinned reference)")
        image = image.strip() or None

    renew = raw.get("lease_renew_interval_seconds")
    caps = LimitCaps(
        max_memory_mb=_positive_number(
            "limits.max_memory_mb",
            limits_raw.get("max_memory_mb", LimitCaps.max_memory_mb),
            integer=True,
        ),
        max_cpus=_positive_number("limits.max_cpus", limits_raw.get("max_cpus", LimitCaps.max_cpus)),
        max_timeout_seconds=_positive_number(
            "limits.max_timeout_seconds",
            limits_raw.get("max_timeout_seconds", LimitCaps.max_timeout_seconds),
            integer=True,
        ),
        max_output_mb=_positive_number(
            "limits.max_output_mb",
            limits_raw.get("max_output_mb", LimitCaps.max_output_mb),
            integer=True,
        ),
        max_artifact_mb=_positive_number(
            "limits.max_artifact_mb",
            limits_raw.get("max_artifact_mb", LimitCaps.max_artifact_mb),
            integer=True,
        ),
        on_excess=str(limits_raw.get("on_excess", LimitCaps.on_excess)),
        max_epsilon_per_release=_positive_number(
            "limits.max_epsilon_per_release",
            limits_raw.get("max_epsilon_per_release", LimitCaps.max_epsilon_per_release),
        ),
        max_vendor_epsilon=_positive_number(
            "limits.max_vendor_epsilon", limits_raw.get("max_vendor_epsilon", LimitCaps.max_vendor_epsilon)
        ),
        max_task_epsilon=_positive_number(
            "limits.max_task_epsilon", limits_raw.get("max_task_epsilon", LimitCaps.max_task_epsilon)
        ),
    )
    if caps.on_excess not in ON_EXCESS_CHOICES:
        raise ConfigError(f"limits.on_excess must be one of {ON_EXCESS_CHOICES}, got {caps.on_excess!r}")
    if caps.max_epsilon_per_release > min(caps.max_vendor_epsilon, caps.max_task_epsilon):
        # No release could ever fit the site's budget: a misconfiguration, not a policy.
        raise ConfigError("limits.max_epsilon_per_release must be at most max_vendor_epsilon and max_task_epsilon")

    retry = RetryPolicy(
        max_attempts=_positive_number(
            "retry.max_attempts",
            retry_raw.get("max_attempts", RetryPolicy.max_attempts),
            integer=True,
        ),
        backoff_base_seconds=_positive_number(
            "retry.backoff_base_seconds",
            retry_raw.get("backoff_base_seconds", RetryPolicy.backoff_base_seconds),
        ),
        backoff_max_seconds=_positive_number(
            "retry.backoff_max_seconds",
            retry_raw.get("backoff_max_seconds", RetryPolicy.backoff_max_seconds),
        ),
        request_timeout_seconds=_positive_number(
            "retry.request_timeout_seconds",
            retry_raw.get("request_timeout_seconds", RetryPolicy.request_timeout_seconds),
        ),
    )
    if retry.backoff_max_seconds < retry.backoff_base_seconds:
        raise ConfigError("retry.backoff_max_seconds must be >= retry.backoff_base_seconds")

    return AgentConfig(
        hub_url=hub_url,
        site_token=token,
        data_dir=data_dir,
        work_dir=work_dir,
        image=image,
        poll_interval_seconds=_positive_number(
            "poll_interval_seconds", raw.get("poll_interval_seconds", 10.0)
        ),
        lease_renew_interval_seconds=(
            None if renew is None else _positive_number("lease_renew_interval_seconds", renew)
        ),
        batch_size=_positive_number("batch_size", raw.get("batch_size", 4096), integer=True),
        allow_insecure_http=allow_http,
        min_free_disk_mb=_positive_number("min_free_disk_mb", raw.get("min_free_disk_mb", 512), integer=True),
        sandbox_runtime=_runtime(raw.get("sandbox_runtime", "runc")),
        pool_size=_non_negative_int("pool_size", raw.get("pool_size", AgentConfig.pool_size)),
        pool_memory_mb=_non_negative_int("pool_memory_mb", raw.get("pool_memory_mb", AgentConfig.pool_memory_mb)),
        compile_models=_bool("compile_models", raw.get("compile_models", AgentConfig.compile_models)),
        limits=caps,
        retry=retry,
    )


SANDBOX_RUNTIMES = ("runc", "runsc")


def _runtime(value: Any) -> str:
    if value not in SANDBOX_RUNTIMES:
        raise ConfigError(f"sandbox_runtime must be one of {', '.join(SANDBOX_RUNTIMES)}, got {value!r}")
    return str(value)


class LimitsRefused(ValueError):
    """A job spec's resource limits are invalid or exceed the site's caps (``policy_violation``)."""

    reason = "policy_violation"


# job spec key -> (cap attribute, integer?)
_LIMIT_FIELDS = {
    "memory_mb": ("max_memory_mb", True),
    "cpus": ("max_cpus", False),
    "timeout_seconds": ("max_timeout_seconds", True),
    "max_output_mb": ("max_output_mb", True),
}


def effective_limits(requested: Mapping[str, Any] | None, caps: LimitCaps) -> dict[str, Any]:
    """The limits a sandbox run gets: the job's request, checked against the site's caps.

    A missing value takes the site's cap. A non-positive or non-numeric value is refused. A value
    over the cap is refused (``on_excess="refuse"``) or lowered to the cap (``"clamp"``). The
    result never exceeds a cap, whatever the hub sent.
    """
    if requested is None:
        requested = {}
    if not isinstance(requested, Mapping):
        raise LimitsRefused("resource_limits must be an object")
    out: dict[str, Any] = {}
    for key, (cap_name, integer) in _LIMIT_FIELDS.items():
        cap = getattr(caps, cap_name)
        value = requested.get(key)
        if value is None:
            out[key] = cap
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LimitsRefused(f"resource_limits.{key} must be a number")
        if value <= 0:
            raise LimitsRefused(f"resource_limits.{key} must be positive")
        if value > cap:
            if caps.on_excess == "refuse":
                raise LimitsRefused(f"resource_limits.{key}={value} exceeds the site's cap {cap}")
            value = cap
        out[key] = max(1, int(value)) if integer else float(value)
    return out
