"""Held state requests learn of a phase change committed by another process of the hub through
the run's signal file (a ``stat``), and re-read the database only every ``CHECK_SECONDS``."""

from __future__ import annotations

import threading

from marketplace.finetuning import waiting


def _fake_versions(monkeypatch, versions: list[str]) -> list[int]:
    calls = [0]

    def current(run_id):
        calls[0] += 1
        return versions[-1]

    monkeypatch.setattr(waiting, "_current_version", current)
    return calls


def test_a_change_signalled_by_another_process_wakes_the_wait_without_the_database_poll(monkeypatch, settings):
    settings.VAULTBENCH_FL_STATE_WAITERS = 2
    monkeypatch.setattr(waiting, "CHECK_SECONDS", 1000.0)  # only the signal can end this wait early
    versions = ["running.0.0.masked"]
    calls = _fake_versions(monkeypatch, versions)
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(waiting.wait_for_change(run_id=424242, since=versions[0], wait=60, multithreaded=True))
    )
    thread.start()
    while calls[0] == 0:  # the waiter read the version once
        thread.join(0.01)
    versions.append("running.0.0.unmask")
    # What another process does after its commit: append to the run's signal file (no condition here).
    with open(waiting._signal_dir() / "run-424242", "ab") as signal:
        signal.write(b".")
    thread.join(60)
    assert not thread.is_alive() and result == [True]
    assert calls[0] == 2  # the first read, and one after the signal: no polling in between


def test_a_held_request_reads_the_database_at_most_every_check_interval(monkeypatch, settings):
    settings.VAULTBENCH_FL_STATE_WAITERS = 2
    calls = _fake_versions(monkeypatch, ["running.1.0.masked"])
    assert waiting.wait_for_change(run_id=424243, since="running.1.0.masked", wait=0.5, multithreaded=True)
    assert 1 <= calls[0] <= 0.5 / waiting.CHECK_SECONDS + 2  # not every 2 ms signal check
