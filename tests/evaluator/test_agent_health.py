"""An agent that cannot work (its disk is full) claims nothing, says so once in its log and in
every heartbeat, and resumes when it can."""

import logging

from evaluator.site_health import DISK_FULL, QuietLog, check
from tests.evaluator.test_agent_loop import FakeSandbox, data_dir, hub, make_agent, make_config  # noqa: F401


def test_a_work_folder_with_too_little_free_space_is_reported_disk_full(hub, data_dir):  # noqa: F811
    assert check(make_config(hub, data_dir, min_free_disk_mb=1)).ok
    health = check(make_config(hub, data_dir, min_free_disk_mb=10**9))  # more than any disk here
    assert health.status == DISK_FULL and "MiB free in work_dir" in health.detail


def test_a_full_disk_means_no_claim_a_heartbeat_that_says_why_and_one_log_line(hub, data_dir, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    hub.add_job()
    sandbox = FakeSandbox()
    agent = make_agent(hub, data_dir, sandbox, min_free_disk_mb=10**9)
    for _ in range(5):
        assert agent.run_once() is False
    assert hub.jobs and sandbox.calls == [] and hub.results == hub.failures == []  # never claimed
    assert hub.heartbeats[-1]["health"]["status"] == "disk_full"
    said = [r for r in caplog.records if "cannot work: disk full" in r.getMessage()]
    assert len(said) == 1  # not at every poll
    agent.config = make_config(hub, data_dir, min_free_disk_mb=1)  # space freed
    assert agent.run_once() is True
    assert hub.heartbeats[-1]["health"] == {"status": "ok", "detail": ""} and len(hub.results) == 1
    assert any("can work again" in r.getMessage() for r in caplog.records)


def test_a_repeating_warning_is_said_once_per_period_and_again_when_it_changes(caplog):
    quiet = QuietLog(every=60)
    assert quiet.warning("hub", "hub unreachable")
    assert not quiet.warning("hub", "hub unreachable")
    assert quiet.warning("hub", "hub refused")
    quiet.every = 0
    assert quiet.warning("hub", "hub refused")


def test_a_moving_figure_in_a_repeating_warning_is_not_a_new_warning():
    quiet = QuietLog(every=60)
    assert quiet.warning("health", "disk full: 10 MiB free", topic="disk_full")
    assert not quiet.warning("health", "disk full: 9 MiB free", topic="disk_full")  # the same condition
    assert quiet.warning("health", "cannot check the disk", topic="disk_unreadable")
