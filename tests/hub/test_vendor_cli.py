"""The vendor CLI against a live hub over real HTTP."""

import pytest

from marketplace.submissions.models import Submission
from marketplace.vendor_cli import main
from tests.conftest import make_task, register_shard, sklearn_like_artifact

pytestmark = pytest.mark.django_db(transaction=True)


def test_vendor_uploads_and_follows_a_model_from_the_cli(cli, owner, vendor, site, tmp_path):
    task = make_task(owner)
    register_shard(site, task)
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(sklearn_like_artifact().getvalue())
    code, out, _ = cli("tasks")
    assert code == 0 and task.title in out
    code, out, err = cli("submit", str(artifact), "--task", str(task.id), "--format", "sklearn", "--name", "cli model")
    assert code == 0, err
    submission = Submission.objects.get(name="cli model")
    assert out.startswith(f"submitted #{submission.id}") and submission.vendor == vendor.organization
    code, out, _ = cli("status", str(submission.id))
    # Pending until its padded release time: no site, no progress (docs/disclosure.md).
    assert code == 0 and "pending" in out and site.site.name not in out


def test_cli_shows_the_hubs_clear_error(cli, owner, site, tmp_path):
    task = make_task(owner)
    register_shard(site, task)
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not an onnx file")
    code, _, err = cli("submit", str(bogus), "--task", str(task.id), "--format", "onnx", "--name", "x")
    assert code == 2 and "implausible_format" in err
    assert not Submission.objects.exists()


def test_cli_without_a_token_says_how_to_get_one(live_server, monkeypatch, capsys):
    monkeypatch.delenv("VAULTBENCH_TOKEN", raising=False)
    assert main(["--hub", live_server.url, "tasks"]) == 2
    assert "VAULTBENCH_TOKEN" in capsys.readouterr().err
