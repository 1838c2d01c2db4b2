"""SQL queries per protocol post and per state read, pinned (a round's hub time is mostly its
posts' queries: see BENCHMARKS.md, federated rounds). Counted as the test database sees them:
the view's transaction is a savepoint here, two of the counted statements.

Per request: the site token, the run (locked), its participants with their jobs (one join), this
phase's posts (ids and hashes only), then the writes: egress mirror (a release), the message,
one audit row; a post that closes the round adds the round's messages, the round record, the
delete, the round's audit row and one update of the run however many phases it opened.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace.audit.models import AuditEvent
from marketplace.egress.models import EgressRecord
from marketplace.finetuning.models import FineTuningRun, ProtocolMessage
from tests.conftest import make_task
from tests.finetuning.conftest import make_parent, sites_for, start_run, updates_for
from tests.finetuning.test_two_phase_rounds import _masked_with_next_keys, _unmask_with_next_shares

# The most each request may take (SQLite and PostgreSQL alike).
STATE = 4
UPDATE, UPDATE_CLOSING = 9, 14
MASKED, MASKED_LAST = 12, 13
UNMASK, UNMASK_CLOSING = 11, 18


class Counted:
    """Wraps a site's test client: the queries of each POST, by label."""

    def __init__(self, site, label: str, counts: list):
        self.site, self.label, self.counts = site, label, counts
        self.original = site.api.post

    def __enter__(self):
        def post(*args, **kwargs):
            with CaptureQueriesContext(connection) as ctx:
                response = self.original(*args, **kwargs)
            self.counts.append((self.label, len(ctx.captured_queries), response.status_code))
            return response

        self.site.api.post = post

    def __exit__(self, *exc):
        self.site.api.post = self.original


def _fl_task(owner, **fields):
    return make_task(owner, fine_tuning_allowed=True, fl_privacy_unit="none", fl_clip_norm=10.0, **fields)


def _check(counts, limits):
    assert counts, "no post was counted"
    for label, n, status in counts:
        assert status == 200, label
        assert n <= limits[label], f"{label}: {n} queries (at most {limits[label]})"


@pytest.mark.django_db
def test_queries_per_update_post_and_state_read(owner, vendor):
    task = _fl_task(owner, fl_secure_aggregation=False)
    sites = sites_for(owner, task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=3)
    counts: list = []
    for rnd in range(2):
        updates = updates_for(3, seed=rnd)
        for i, site in enumerate(sites):
            with Counted(site, "update" if i < 2 else "closing", counts):
                site.post_update(run_id, updates[i])
    _check(counts, {"update": UPDATE, "closing": UPDATE_CLOSING})
    with CaptureQueriesContext(connection) as ctx:
        state = sites[0].state(run_id)
    assert state["round"] == 2 and state["phase"] == "update" and len(ctx.captured_queries) <= STATE
    # Nothing the design requires was dropped: one egress row per release, one audit row per post.
    assert EgressRecord.objects.filter(task=task, kind="update").count() == 6
    assert AuditEvent.objects.filter(action="finetuning.update_posted", object_id=str(run_id)).count() == 6
    assert FineTuningRun.objects.get(id=run_id).rounds_completed == 2


@pytest.mark.django_db
def test_queries_per_secure_aggregation_post(owner, vendor):
    task = _fl_task(owner)
    sites = sites_for(owner, task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=4)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    counts: list = []
    for rnd in range(3):  # the steady state: keys ride on masked posts, shares on unmask posts
        updates = updates_for(3, seed=rnd)
        for i, site in enumerate(sites):
            with Counted(site, "masked" if i < 2 else "masked_last", counts):
                _masked_with_next_keys(site, run_id, updates[i], 100 + i)
        for i, site in enumerate(sites):
            with Counted(site, "unmask" if i < 2 else "closing", counts):
                answer = _unmask_with_next_shares(site, run_id)
        state = answer.json()["state"]
        assert (state["round"], state["phase"], state["done"]) == (rnd + 1, "masked", False)
        assert {b["sender"] for b in state["bundles"]} == {1, 2, 3}
        for site in sites:
            site.client_state = site.next_client
    _check(counts, {"masked": MASKED, "masked_last": MASKED_LAST, "unmask": UNMASK, "closing": UNMASK_CLOSING})
    run = FineTuningRun.objects.get(id=run_id)
    assert run.rounds_completed == 3 and not ProtocolMessage.objects.filter(run=run, round__lt=3).exists()
    assert EgressRecord.objects.filter(task=task, kind="update").count() == 9
    audits = AuditEvent.objects.filter(object_id=str(run_id))
    assert audits.filter(action="finetuning.masked_posted", data__next_keys=True).count() == 9
    assert audits.filter(action="finetuning.unmask_posted", data__next_shares=True).count() == 9
