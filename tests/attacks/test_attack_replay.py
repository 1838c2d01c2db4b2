"""The attack replay, short: a hostile vendor against a live hub, real agents and sandboxes.

What is asserted is exact, never a noisy decoding rate:
- constant channels: the same model bytes on data that differ only in the secret the model
  reads (it crashes / answers NaN / runs out of memory, or sleeps, or writes per-site carriers as
  the secret says) give the vendor the same transcript of every endpoint it can poll, bodies and
  change times, apart from the DP-noised values; the secret did act (the owner's records show
  the fallback releases and the sleeps);
- budgets: two agents at one site whose own cap admits 3 releases while the hub admits 8 release
  exactly 3 (site ledger, hub); the hub's cap of 3 refuses the other 5 of 8 uploads at upload
  (409 budget_exhausted); self-service organizations never take the task past its total N,
  each upload beyond is refused at upload and uses no quota.

Every stream is compared, the submission list filtered by status and the leakage view included
(both followed the sites' true progress until the replay found them: ``KNOWN_LEAKS`` is empty).

The full run, with the metric channel and the Ladder figures: benchmarks/attack_replay.py.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DELAY = 30  # the release delay: above the longest pair's true run time, with a wide margin


def test_constant_channels_show_nothing_and_budgets_are_never_exceeded(
    live_server, owner, vendor, runner_image, tmp_path
):
    from attacks import suite
    from attacks.live import Deployment, create_sites, seed_tasks, site_releases, start_sites

    from marketplace.accounts.services import personal_token_create

    settings = suite.Settings(delay=DELAY, metric=False, ladder=False, residual=False, wait=180)
    shards, knowledge = suite.site_shards()
    site_plans, plans = suite.plan(settings, shards, knowledge)
    _, token = personal_token_create(user=vendor.user, name="replay")
    task_ids = seed_tasks(owner_user=owner.user, owner_org=owner.organization, plans=plans,
                          common={"release_delay_seconds": DELAY})  # fmt: skip
    site_tokens = create_sites(
        owner_user=owner.user, owner_org=owner.organization, names=[s.name for s in site_plans]
    )
    sites, agents = start_sites(tmp_path, url=live_server.url, image=runner_image, site_tokens=site_tokens,
                                site_plans=site_plans, task_ids=task_ids, plans=plans, shards=shards)  # fmt: skip
    try:
        deployment = Deployment(live_server.url, token, task_ids, sites, agents, tmp_path)
        replay = suite.Replay(deployment, shards, knowledge, settings, tmp_path / "artifacts")
        replay.warm_up()
        replay.start_poller()
        replay.constant_run()
        budget_site = replay.budget_start("budget-site")
        budget_hub = replay.budget_start("budget-hub")
        constant = replay.constant_result()
        orgs = replay.orgs_run()
        site = replay.budget_result("budget-site", budget_site, settings.budget_cap)
        hub = replay.budget_result("budget-hub", budget_hub, settings.budget_cap)
    finally:
        for agent in agents:
            agent.close()

    # --- constant channels: identical transcripts, and the secret did act ----------------------
    for channel in suite.CONSTANT_CHANNELS:
        result = constant[channel]
        assert result["identical"], (
            f"{channel}: the vendor can tell the secrets apart: {result['differences']}"
        )
        assert result["streams"] >= 19, result["streams"]  # every stream the poller reads
        statuses = [
            change["body"]["body"]["status"] for change in result["transcript_A"]["GET /submissions/{id}"]
        ]
        assert statuses == ["pending", "scored"], statuses
        for variant in ("A", "B"):
            truth = result["truth"][variant]
            assert truth["visible_after_s"] == DELAY, (channel, variant, truth)
            assert truth["final_after_s"] < DELAY, (channel, variant, truth)
            assert [o[1] for o in truth["outcomes"]] == ["succeeded"] * 3, truth
    notes = {}
    for variant in ("A", "B"):
        task_id = task_ids[f"failure-{variant}"]
        notes[variant] = [
            e.note
            for name in suite.SITES
            for e in sites[name].ledger_entries()
            if str(e.task_id) == str(task_id)
        ]
    assert notes["A"] == ["", "", ""]
    assert sorted(n.split(":")[1].strip() for n in notes["B"]) == [
        "crashed",
        "invalid_output",
        "out_of_memory",
    ], notes
    sleeps = {v: min(s for _, s in constant["timing"]["truth"][v]["job_seconds"]) for v in ("A", "B")}
    assert sleeps["B"] >= 3 * settings.timing_step > sleeps["A"], sleeps

    # --- budgets ---------------------------------------------------------------------------------
    cap = settings.budget_cap
    assert site["accepted"] == settings.budget_uploads, site
    assert site["site_releases"] == site["hub_results"] == site["hub_charges"] == cap, site
    assert site["site_failures"] == settings.budget_uploads - cap, site
    assert hub["accepted"] == cap, hub
    assert hub["refused"] == [(409, "budget_exhausted")] * (settings.budget_uploads - cap), hub
    assert hub["site_releases"] == hub["hub_results"] == hub["hub_charges"] == cap, hub
    assert orgs["orgs_created"] == settings.extra_orgs, orgs
    assert orgs["accepted"] == settings.orgs_total, orgs["attempts"]
    assert orgs["site_releases"] == orgs["hub_results"] == orgs["hub_charges"] == settings.orgs_total, orgs
    assert (
        orgs["refused"] == orgs["refused_budget_exhausted"] == len(orgs["attempts"]) - settings.orgs_total
    ), orgs
    assert orgs["refusals_left_quota_untouched"], orgs["attempts"]
    scopes = [a["scope"] for a in orgs["attempts"] if a["id"] is None]
    assert scopes[0] == "vendor" and set(scopes[1:]) == {"task"}, orgs["attempts"]
    for name in suite.SITES:  # nothing of the budget tasks ran anywhere else
        assert site_releases(sites[name], task_ids["budget-orgs"])["releases"] == 0

    assert not suite.KNOWN_LEAKS  # every stream above was compared
