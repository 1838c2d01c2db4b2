"""The site CLI asks the hub: register-data checks the data against the task's schema fetched with
the site token before storing anything; init, status and doctor; every config key documented.
Against a live hub over real HTTP."""

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from evaluator import config as site_config
from evaluator.__main__ import main
from evaluator.config import ConfigError, load_config
from marketplace.catalog.models import DataShard
from tests.conftest import make_site, make_task

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site_toml(tmp_path, live_server, site):
    path = tmp_path / "site.toml"
    path.write_text(f'hub_url = "{live_server.url}"\nsite_token = "{site.token}"\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def _data(tmp_path, *, rows=60, columns=30, labels=None):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.normal(size=(rows, columns)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(rows) % 2 if labels is None else labels)
    return ["--features", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]


def _register(site_toml, task_id, files, *extra):
    return main(["register-data", "--config", str(site_toml), "--task", str(task_id), *files, *extra])


def test_register_data_takes_the_schema_from_the_hub_and_reports_the_shard(site_toml, owner, site, tmp_path, capsys):
    task = make_task(owner)
    assert _register(site_toml, task.id, _data(tmp_path)) == 0, capsys.readouterr().err
    assert DataShard.objects.get(task=task, site=site.site).row_count == 60
    assert json.loads(capsys.readouterr().out)["n_features"] == 30


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"columns": 29}, "features have 29 columns; the input spec says 30"),
        ({"labels": np.linspace(0, 1, 60)}, "classification labels must be integer class indices"),
        ({"labels": np.arange(60) % 3}, "labels must be class indices in 0..1"),
        ({"rows": 5, "labels": np.arange(5) % 2}, "5 rows; the test split needs at least 10"),
    ],
)
def test_data_that_does_not_fit_the_hubs_schema_is_refused_and_nothing_stored(
    site_toml, owner, site, tmp_path, capsys, shape, message
):
    task = make_task(owner)
    assert _register(site_toml, task.id, _data(tmp_path, **shape)) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing stored" in err
    assert not (tmp_path / "data" / "tasks").exists() and not DataShard.objects.exists()


def test_an_unknown_or_foreign_task_is_refused_before_anything_is_stored(
    site_toml, owner, other_owner, tmp_path, capsys
):
    foreign = make_task(other_owner)  # another organization's task: not this site's
    make_site(other_owner, "elsewhere")
    for task_id in (foreign.id, 99999):
        assert _register(site_toml, task_id, _data(tmp_path)) == 2
        assert "no such task for this site" in capsys.readouterr().err
    assert not (tmp_path / "data" / "tasks").exists()


def test_flags_that_disagree_with_the_hub_are_refused(site_toml, owner, tmp_path, capsys):
    task = make_task(owner)
    code = _register(site_toml, task.id, _data(tmp_path), "--n-features", "29", "--task-type", "binary_classification")
    assert code == 2 and "--n-features 29 disagrees with the hub's task (n_features = 30)" in capsys.readouterr().err
    assert not (tmp_path / "data" / "tasks").exists()


def test_an_unreachable_hub_stores_nothing_unless_offline(tmp_path, site, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    toml = tmp_path / "site.toml"
    toml.write_text(f'hub_url = "http://127.0.0.1:{port}"\nsite_token = "{site.token}"\ndata_dir = "{tmp_path / "data"}"\n'
                    "[retry]\nmax_attempts = 1\n")  # fmt: skip
    assert _register(toml, 7, _data(tmp_path)) == 3
    assert "nothing stored" in capsys.readouterr().err and not (tmp_path / "data" / "tasks").exists()
    offline = ["--offline", "--n-features", "30", "--task-type", "binary_classification"]
    assert _register(toml, 7, _data(tmp_path), *offline) == 0
    assert (tmp_path / "data" / "tasks" / "7" / "meta.json").is_file()


def test_the_agent_task_endpoint_serves_only_the_sites_own_organization(owner, other_owner, site):
    own, foreign = make_task(owner), make_task(other_owner)
    response = site.client.get(f"/api/v1/agent/tasks/{own.id}")
    assert response.status_code == 200
    assert response.json()["input_spec"]["n_features"] == 30 and response.json()["task_type"] == "binary_classification"
    assert site.client.get(f"/api/v1/agent/tasks/{foreign.id}").status_code == 404
    assert owner.client.get(f"/api/v1/agent/tasks/{own.id}").status_code in (401, 403)  # a person's token: no


def test_init_writes_a_commented_config_that_loads(tmp_path, capsys):
    path = tmp_path / "etc" / "site.toml"
    args = ["init", str(path), "--hub-url", "https://hub.example.org", "--data-dir", str(tmp_path / "data")]
    assert main(args) == 0
    text = path.read_text()
    assert text.count("#") >= 15 and "docs/site-operator.md" in text
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "site-token").write_text("vbs_fromthehub0000\n")
    config = load_config(path, env={})
    assert config.hub_url == "https://hub.example.org" and config.poll_interval_seconds == 10
    assert main(args) == 2 and "--force" in capsys.readouterr().err  # never overwrites silently


def test_an_unknown_setting_lists_the_valid_keys(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('data_dir = "/tmp/x"\npoll_intervall = 3\n')
    with pytest.raises(ConfigError, match=r"poll_intervall \(valid keys: .*poll_interval_seconds"):
        load_config(path, env={}, require_hub=False)
    path.write_text('data_dir = "/tmp/x"\n[limits]\nmax_gpus = 1\n')
    with pytest.raises(ConfigError, match=r"max_gpus \(valid keys: .*max_cpus"):
        load_config(path, env={}, require_hub=False)


def test_every_config_key_and_variable_is_documented():
    doc = (ROOT / "docs/site-operator.md").read_text()
    keys = {k for k in site_config._TOP_KEYS if k not in ("limits", "retry")}
    keys |= set(site_config._LIMIT_KEYS) | set(site_config._RETRY_KEYS) | set(site_config._RETIRED_LIMIT_KEYS)
    missing = [k for k in sorted(keys) if not re.search(rf"`(\[\w+\] )?{k}`", doc)]
    missing += [v for v in sorted({**site_config._ENV_TOP, **site_config._ENV_LIMITS}) if f"`{v}`" not in doc]
    assert missing == []


def test_status_and_doctor_report_the_hub_and_say_how_to_fix_a_refused_token(
    site_toml, owner, site, tmp_path, capsys
):
    task = make_task(owner)
    assert _register(site_toml, task.id, _data(tmp_path)) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(site_toml), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"data_dir", "agent", "engine", "image", "hub", "ledger", "shards"}
    assert checks["hub"]["ok"] and checks["ledger"]["ok"]
    assert report["shards"] == [{"task": str(task.id), "rows": 60, "task_type": "binary_classification",
                                 "train_split": False}]  # fmt: skip
    site_toml.write_text(site_toml.read_text().replace(site.token, "vbs_revokedtoken0000"))
    assert main(["doctor", "--config", str(site_toml)]) == 1
    out = capsys.readouterr().out
    assert "✗ hub:" in out and "fix: the site token was refused" in out and "problem(s) found" in out
