import pytest

from tests.conftest import make_task, register_shard, upload
from tests.hub.helpers import release_body, with_receipt


def test_upload_is_checked_dispatched_claimed_scored_and_ranked(
    owner, vendor, site, django_capture_on_commit_callbacks
):
    task = make_task(owner, release_delay_seconds=0)
    register_shard(site, task)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(vendor, task)
    assert response.status_code == 201, response.content
    submission_id = response.json()["id"]

    claim = site.client.post("/api/v1/agent/jobs/claim", {"agent_id": "agent-1"})
    assert claim.status_code == 200, claim.content
    job = claim.json()["job"]
    assert job["submission"]["id"] == submission_id
    artifact = site.client.get(f"/api/v1/agent/jobs/{job['id']}/artifact")
    assert artifact.status_code == 200
    body = with_receipt(release_body(task, correct=0.9))
    with django_capture_on_commit_callbacks(execute=True):
        result = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert result.status_code == 200, result.content

    board = vendor.client.get(f"/api/v1/tasks/{task.id}/leaderboard").json()
    assert board["results"][0]["metrics"]["accuracy"] == pytest.approx(0.9)

    from marketplace.egress.models import EgressRecord

    record = EgressRecord.objects.get(job_id=job["id"])
    assert (record.kind, record.sha256, record.vendor_id) == (
        "metrics",
        body["ledger"]["sha256"],
        vendor.organization.id,
    )
