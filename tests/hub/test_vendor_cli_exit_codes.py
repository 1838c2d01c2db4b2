"""The vendor CLI's contract with scripts: distinct exit codes, --json on every command, progress
while waiting, every page of a list, and bad arguments refused -- against a live hub over HTTP."""

import json
import socket
import threading
import time

import pytest

from marketplace.leaderboard.services import leaderboard_aggregate
from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.services import submission_check
from marketplace.vendor_cli import main
from tests.conftest import make_task, register_shard, sklearn_like_artifact
from tests.hub.helpers import claim, post_result, submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(sklearn_like_artifact().getvalue())
    return path


def _scored(vendor, site, task):
    submission = submit(vendor, task)
    post_result(site, claim(site)["id"])
    leaderboard_aggregate(submission_id=submission.id)
    return submission


def test_submit_wait_shows_progress_and_exits_zero_with_the_scores(cli, owner, vendor, site, artifact):
    task = make_task(owner, release_delay_seconds=0)
    register_shard(site, task)

    def site_evaluates_it():  # the hub's check and one site's agent, while the CLI waits
        deadline = time.monotonic() + 60
        while not Submission.objects.filter(name="waited").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # at least one poll sees it pending
        submission = Submission.objects.get(name="waited")
        submission_check(submission_id=submission.id)
        post_result(site, claim(site)["id"])
        leaderboard_aggregate(submission_id=submission.id)

    worker = threading.Thread(target=site_evaluates_it)
    worker.start()
    code, out, err = cli("submit", str(artifact), "--task", str(task.id), "--format", "sklearn", "--name", "waited",
                         "--wait", "--poll", "0.5", "--timeout", "120")  # fmt: skip
    worker.join()
    assert code == 0, err
    assert "] #" in err and ": pending" in err and ": scored" in err  # progress, on stderr
    assert ": scored" in out and "roc_auc = " in out and "accuracy = " in out


@pytest.mark.parametrize(
    ("status", "exit_code"), [(SubmissionStatus.FAILED, 1), (SubmissionStatus.REJECTED, 5)]
)
def test_wait_and_status_exit_non_zero_for_a_failed_or_rejected_submission(cli, owner, vendor, site, status, exit_code):
    task = make_task(owner, release_delay_seconds=0)
    register_shard(site, task)
    submission = submit(vendor, task)
    job_id = claim(site)["id"]
    if status == SubmissionStatus.FAILED:
        site.client.post(f"/api/v1/agent/jobs/{job_id}/failure", {"agent_id": "agent-1", "reason": "invalid_artifact"})
        leaderboard_aggregate(submission_id=submission.id)
    else:  # refused by the hub's checks
        Submission.objects.filter(id=submission.id).update(status=status, status_reason="artifact_too_large")
    assert Submission.objects.get(id=submission.id).status == status
    for command in (["status"], ["wait", "--poll", "0.1", "--timeout", "5"]):
        code, out, _ = cli(*command, str(submission.id))
        assert code == exit_code and f": {status}" in out


def test_wait_times_out_with_its_own_exit_code_and_the_last_state_in_json(cli, owner, vendor, site):
    task = make_task(owner)  # a release delay: pending for an hour
    register_shard(site, task)
    submission = submit(vendor, task)
    code, out, err = cli("--json", "wait", str(submission.id), "--poll", "0.1", "--timeout", "0.3")
    assert code == 4 and "still pending after 0.3 s" in err
    assert json.loads(out)["status"] == "pending"


def test_every_command_speaks_json(cli, owner, vendor, site, artifact):
    task = make_task(owner, release_delay_seconds=0)
    register_shard(site, task)
    scored = _scored(vendor, site, task)
    code, out, _ = cli("tasks", "--json")
    assert code == 0 and [t["id"] for t in json.loads(out)] == [task.id]
    code, out, _ = cli("quota", "--task", str(task.id), "--json")
    assert code == 0 and json.loads(out)["privacy"]["vendor_epsilon"] == 10
    code, out, _ = cli("status", str(scored.id), "--json")
    document = json.loads(out)
    assert code == 0 and document["status"] == "scored" and set(document["metrics"]) == {"roc_auc", "accuracy"}
    code, out, _ = cli("--json", "leaderboard", str(task.id), "--sort", "accuracy")
    board = json.loads(out)
    assert code == 0 and board["sort"] == "accuracy" and [r["submission_id"] for r in board["results"]] == [scored.id]
    code, out, _ = cli("submit", str(artifact), "--task", str(task.id), "--format", "sklearn", "--name", "j", "--json")
    uploaded = json.loads(out)
    assert code == 0 and uploaded["name"] == "j" and Submission.objects.filter(id=uploaded["id"]).exists()
    code, out, _ = cli("nominate", str(scored.id), "--json")
    assert code == 0 and json.loads(out)["id"] == scored.id


def test_tasks_follows_every_page(cli, owner):
    tasks = [make_task(owner, title=f"Task {i:02d}") for i in range(53)]  # the API's pages hold 50
    code, out, _ = cli("tasks", "--json")
    assert code == 0 and sorted(t["id"] for t in json.loads(out)) == sorted(t.id for t in tasks)


def test_a_bad_sort_key_is_refused_with_the_valid_keys(cli, owner, site):
    task = make_task(owner)
    code, out, err = cli("leaderboard", str(task.id), "--sort", "f1")
    assert code == 2 and out == "" and "unknown sort key 'f1': valid keys are roc_auc, accuracy" in err


def test_the_hubs_refusal_is_a_json_error_with_its_code(cli, owner, site, tmp_path):
    task = make_task(owner)
    register_shard(site, task)
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not an onnx file")
    code, out, _ = cli("--json", "submit", str(bogus), "--task", str(task.id), "--format", "onnx", "--name", "x")
    error = json.loads(out)["error"]
    assert code == 2 and error["code"] == "implausible_format" and error["http_status"] == 400


def test_an_unreachable_hub_has_its_own_exit_code(monkeypatch, capsys):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("VAULTBENCH_TOKEN", "vbp_x")
    assert main(["--hub", f"http://127.0.0.1:{port}", "tasks"]) == 3
    assert "cannot reach the hub" in capsys.readouterr().err


def test_bad_arguments_are_refused_before_anything_is_sent(monkeypatch, capsys):
    monkeypatch.setenv("VAULTBENCH_TOKEN", "vbp_x")
    with pytest.raises(SystemExit) as refused:
        main(["--hub", "http://127.0.0.1:9", "submit", "m.bin", "--task", "1", "--format", "keras", "--name", "x"])
    assert refused.value.code == 2 and "invalid choice: 'keras'" in capsys.readouterr().err
    assert main(["--hub", "ftp://hub", "tasks"]) == 2
    assert "must start with http://" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--hub", "http://127.0.0.1:9", "wait", "1", "--timeout", "-5"])
