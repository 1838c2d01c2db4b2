"""The owner sees a site that cannot work (its agent's heartbeat says why) and a stuck site (jobs
wait, nobody claims): flagged by the reconciler, shown on the site's page, audited."""

from datetime import timedelta

from django.utils import timezone

from marketplace.audit.models import AuditEvent
from marketplace.jobs.models import Job
from marketplace.sites.models import Site
from marketplace.sites.services import sites_flag_stuck
from tests.hub.helpers import claim, submit


def heartbeat(site, health=None):
    body = {"agent_id": "agent-1", "capabilities": {}}
    if health is not None:
        body["health"] = health
    return site.client.post("/api/v1/agent/heartbeat", body, format="json")


def test_an_agent_that_cannot_work_says_so_and_the_owner_sees_it(owner, site):
    assert heartbeat(site, {"status": "disk_full", "detail": "12 MiB free in work_dir, 512 MiB needed"}).status_code == 200
    stored = Site.objects.get(id=site.site.id)
    assert stored.problem == "cannot work: disk full (12 MiB free in work_dir, 512 MiB needed)"
    from django.test import Client

    browser = Client()
    browser.force_login(owner.user)
    page = browser.get(f"/manage/sites/{site.site.id}/")
    assert page.status_code == 200 and "cannot work: disk full" in page.content.decode()
    heartbeat(site, {"status": "ok"})
    assert Site.objects.get(id=site.site.id).problem == ""
    assert [e.data["status"] for e in AuditEvent.objects.filter(action="site.health").order_by("id")] == ["disk_full", "ok"]


def test_a_bad_health_field_is_a_400(site):
    assert heartbeat(site, {"status": "Disk Full!"}).status_code == 400
    assert heartbeat(site, {"status": "ok", "detail": "x" * 301}).status_code == 400


def test_jobs_waiting_with_no_claim_flag_the_site_until_it_claims_again(vendor, site, open_task):
    submission = submit(vendor, open_task)
    assert sites_flag_stuck() == {"flagged": 0, "cleared": 0}  # the job has not waited long yet
    Job.objects.filter(submission=submission).update(updated_at=timezone.now() - timedelta(minutes=30))
    assert sites_flag_stuck() == {"flagged": 1, "cleared": 0}
    assert sites_flag_stuck() == {"flagged": 0, "cleared": 0}  # flagged once
    assert Site.objects.get(id=site.site.id).problem.startswith("stuck: jobs wait")
    assert AuditEvent.objects.filter(action="site.stuck").count() == 1
    claim(site)
    assert sites_flag_stuck() == {"flagged": 0, "cleared": 1}
    assert Site.objects.get(id=site.site.id).stuck_since is None


def test_a_site_that_claims_is_not_stuck_however_long_other_jobs_wait(vendor, site, open_task):
    first, second = submit(vendor, open_task, name="a"), submit(vendor, open_task, name="b")
    claim(site)
    Job.objects.filter(submission=second).update(updated_at=timezone.now() - timedelta(minutes=30))
    assert sites_flag_stuck() == {"flagged": 0, "cleared": 0}
    assert first and Site.objects.get(id=site.site.id).last_claim_at is not None
