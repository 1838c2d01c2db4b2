import pytest

from evaluator.config import (
    AgentConfig,
    ConfigError,
    LimitCaps,
    LimitsRefused,
    effective_limits,
    load_config,
)

TOKEN = "vbs_" + "a" * 40


def _write(tmp_path, text):
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


BASE = f"""
hub_url = "https://hub.example.org/"
site_token = "{TOKEN}"
data_dir = "data"
"""


def test_loads_a_toml_file_with_defaults(tmp_path):
    config = load_config(_write(tmp_path, BASE), env={})
    assert isinstance(config, AgentConfig)
    assert config.hub_url == "https://hub.example.org"
    assert config.site_token == TOKEN
    assert config.data_dir == tmp_path / "data"  # relative to the config file
    assert config.work_dir == tmp_path / "data" / "work"
    assert config.ledger_path == tmp_path / "data" / "ledger.jsonl"
    assert config.image is None
    assert config.limits == LimitCaps()
    assert config.limits.on_excess == "refuse"


def test_the_token_never_appears_in_the_repr(tmp_path):
    config = load_config(_write(tmp_path, BASE), env={})
    assert TOKEN not in repr(config)


def test_environment_overrides_the_file(tmp_path):
    env = {
        "VAULTBENCH_HUB_URL": "https://other.example.org",
        "VAULTBENCH_SITE_TOKEN": "vbs_fromenvironment",
        "VAULTBENCH_DATA_DIR": str(tmp_path / "elsewhere"),
        "VAULTBENCH_WORK_DIR": str(tmp_path / "scratch"),
        "VAULTBENCH_IMAGE": "vaultbench-runner:abc",
        "VAULTBENCH_POLL_INTERVAL": "2.5",
        "VAULTBENCH_LEASE_RENEW_INTERVAL": "7",
        "VAULTBENCH_MAX_MEMORY_MB": "512",
        "VAULTBENCH_MAX_CPUS": "0.5",
        "VAULTBENCH_LIMITS_ON_EXCESS": "clamp",
    }
    config = load_config(_write(tmp_path, BASE), env=env)
    assert config.hub_url == "https://other.example.org"
    assert config.site_token == "vbs_fromenvironment"
    assert config.data_dir == tmp_path / "elsewhere"
    assert config.work_dir == tmp_path / "scratch"
    assert config.image == "vaultbench-runner:abc"
    assert config.poll_interval_seconds == 2.5
    assert config.lease_renew_interval_seconds == 7.0
    assert config.limits.max_memory_mb == 512
    assert config.limits.max_cpus == 0.5
    assert config.limits.on_excess == "clamp"


def test_environment_alone_is_enough(tmp_path):
    env = {
        "VAULTBENCH_HUB_URL": "http://127.0.0.1:8000",
        "VAULTBENCH_SITE_TOKEN": TOKEN,
        "VAULTBENCH_DATA_DIR": str(tmp_path),
    }
    assert load_config(None, env=env).hub_url == "http://127.0.0.1:8000"


def test_token_can_be_read_from_a_file(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    text = 'hub_url = "https://hub.example.org"\nsite_token_file = "token"\ndata_dir = "d"\n'
    assert load_config(_write(tmp_path, text), env={}).site_token == TOKEN


def test_limits_and_retry_tables_are_read(tmp_path):
    text = (
        BASE
        + """
[limits]
max_memory_mb = 2048
max_cpus = 1.5
max_timeout_seconds = 600
max_output_mb = 32
on_excess = "clamp"
max_epsilon_per_release = 0.5
max_vendor_epsilon = 5
max_task_epsilon = 8
[retry]
max_attempts = 3
backoff_base_seconds = 0.1
backoff_max_seconds = 2
"""
    )
    config = load_config(_write(tmp_path, text), env={})
    assert config.limits.max_memory_mb == 2048 and config.limits.max_cpus == 1.5
    assert (config.limits.max_epsilon_per_release, config.limits.max_vendor_epsilon) == (0.5, 5.0)
    assert config.limits.max_task_epsilon == 8.0
    assert config.retry.max_attempts == 3 and config.retry.backoff_max_seconds == 2.0


@pytest.mark.parametrize(
    "text, message",
    [
        ('site_token = "vbs_abcdefgh"\ndata_dir = "d"', "hub_url is required"),
        ('hub_url = "ftp://x"\nsite_token = "vbs_abcdefgh"\ndata_dir = "d"', "http"),
        (
            'hub_url = "http://hub.example.org"\nsite_token = "vbs_abcdefgh"\ndata_dir = "d"',
            "https",
        ),
        (
            'hub_url = "https://u:p@hub.example.org"\nsite_token = "vbs_abcdefgh"\ndata_dir = "d"',
            "credentials",
        ),
        ('hub_url = "https://h"\ndata_dir = "d"', "site token is required"),
        ('hub_url = "https://h"\nsite_token = "vbp_personal1"\ndata_dir = "d"', "personal token"),
        ('hub_url = "https://h"\nsite_token = "abc"\ndata_dir = "d"', "vbs_"),
        ('hub_url = "https://h"\nsite_token = "vbs_abcdefgh"', "data_dir is required"),
        (BASE + "poll_interval_seconds = -1", "poll_interval_seconds"),
        (BASE + 'poll_interval_seconds = "soon"', "poll_interval_seconds"),
        (BASE + "[limits]\nmax_memory_mb = 0", "max_memory_mb"),
        (BASE + "[limits]\nmax_memory_mb = 1.5", "integer"),
        (BASE + "[limits]\nmax_cpus = true", "max_cpus"),
        (BASE + '[limits]\non_excess = "ignore"', "on_excess"),
        (BASE + "[limits]\nmax_gpus = 1", "unknown setting"),
        (BASE + "[limits]\nmax_epsilon_per_release = 0", "max_epsilon_per_release"),
        (BASE + "[limits]\nmax_vendor_epsilon = -1", "max_vendor_epsilon"),
        (BASE + '[limits]\nmax_task_epsilon = "lots"', "max_task_epsilon"),
        (BASE + "[limits]\nmax_epsilon_per_release = 30", "at most max_vendor_epsilon"),
        (BASE + "frobnicate = 1", "unknown setting"),
        (BASE + "[retry]\nbackoff_base_seconds = 5\nbackoff_max_seconds = 1", "backoff_max"),
        ("hub_url = ", "not valid TOML"),
    ],
)
def test_bad_values_give_clear_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text), env={})


def test_privacy_caps_default_to_documented_values_and_env_overrides_them(tmp_path):
    caps = load_config(_write(tmp_path, BASE), env={}).limits
    assert (caps.max_epsilon_per_release, caps.max_vendor_epsilon, caps.max_task_epsilon) == (2.0, 20.0, 50.0)
    env = {"VAULTBENCH_MAX_EPSILON_PER_RELEASE": "0.25", "VAULTBENCH_MAX_VENDOR_EPSILON": "4",
           "VAULTBENCH_MAX_TASK_EPSILON": "6"}  # fmt: skip
    caps = load_config(_write(tmp_path, BASE), env=env).limits
    assert (caps.max_epsilon_per_release, caps.max_vendor_epsilon, caps.max_task_epsilon) == (0.25, 4.0, 6.0)


def test_an_old_config_with_max_decimals_still_loads(tmp_path):
    config = load_config(_write(tmp_path, BASE + "[limits]\nmax_decimals = 3\n"), env={})
    assert config.limits == LimitCaps()


def test_bad_environment_value_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="max_cpus"):
        load_config(_write(tmp_path, BASE), env={"VAULTBENCH_MAX_CPUS": "lots"})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_plain_http_to_a_remote_hub_can_be_allowed_explicitly(tmp_path):
    text = 'hub_url = "http://hub.lan"\nsite_token = "vbs_abcdefgh"\ndata_dir = "d"\nallow_insecure_http = true'
    assert load_config(_write(tmp_path, text), env={}).hub_url == "http://hub.lan"


def test_local_commands_do_not_need_the_hub(tmp_path):
    config = load_config(_write(tmp_path, 'data_dir = "d"'), env={}, require_hub=False)
    assert config.data_dir == tmp_path / "d" and config.site_token == ""


# --- the site's caps on a job's resource limits ------------------------------------------------

CAPS = LimitCaps(max_memory_mb=1024, max_cpus=1.0, max_timeout_seconds=300, max_output_mb=64)


def test_limits_within_the_caps_are_kept():
    got = effective_limits(
        {"memory_mb": 512, "cpus": 0.5, "timeout_seconds": 60, "max_output_mb": 8}, CAPS
    )
    assert got == {"memory_mb": 512, "cpus": 0.5, "timeout_seconds": 60, "max_output_mb": 8}


def test_missing_limits_take_the_site_caps():
    assert effective_limits({}, CAPS) == {
        "memory_mb": 1024,
        "cpus": 1.0,
        "timeout_seconds": 300,
        "max_output_mb": 64,
    }


def test_a_hub_asking_for_more_than_the_caps_is_refused_by_default():
    with pytest.raises(LimitsRefused, match="memory_mb") as exc:
        effective_limits({"memory_mb": 65536}, CAPS)
    assert exc.value.reason == "policy_violation"


def test_clamp_mode_lowers_every_excess_to_the_cap():
    caps = LimitCaps(**{**CAPS.__dict__, "on_excess": "clamp"})
    got = effective_limits(
        {"memory_mb": 10**6, "cpus": 64, "timeout_seconds": 10**6, "max_output_mb": 10**6}, caps
    )
    assert got == {"memory_mb": 1024, "cpus": 1.0, "timeout_seconds": 300, "max_output_mb": 64}


@pytest.mark.parametrize(
    "bad",
    [
        {"memory_mb": -1},
        {"cpus": 0},
        {"timeout_seconds": "60"},
        {"cpus": True},
        {"memory_mb": float("inf")},
    ],
)
def test_nonsense_limits_are_refused_even_in_clamp_mode(bad):
    caps = LimitCaps(**{**CAPS.__dict__, "on_excess": "clamp"})
    with pytest.raises(LimitsRefused):
        effective_limits(bad, caps)
