from tests.conftest import upload
from tests.hub.helpers import with_receipt


def test_upload_is_checked_dispatched_claimed_scored_and_ranked(
    vendor, site, open_task, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(vendor, open_task)
    assert response.status_code == 201, response.content
    submission_id = response.json()["id"]

    claim = site.client.post("/api/v1/agent/jobs/claim", {"agent_id": "agent-1"})
    assert claim.status_code == 200, claim.content
    job = claim.json()["job"]
    assert job["submission"]["id"] == submission_id
    artifact = site.client.get(f"/api/v1/agent/jobs/{job['id']}/artifact")
    assert artifact.status_code == 200
    body = with_receipt(
        {"agent_id": "agent-1", "metrics": {"roc_auc": 0.91234, "accuracy": 0.9}, "n_rows": 100}
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert result.status_code == 200, result.content

    board = vendor.client.get(f"/api/v1/tasks/{open_task.id}/leaderboard").json()
    assert board["rows"][0]["metrics"] == {"roc_auc": 0.9123, "accuracy": 0.9}

    from marketplace.egress.models import EgressRecord

    record = EgressRecord.objects.get(job_id=job["id"])
    assert (record.kind, record.sha256, record.vendor_id) == (
        "metrics",
        body["ledger"]["sha256"],
        vendor.organization.id,
    )
