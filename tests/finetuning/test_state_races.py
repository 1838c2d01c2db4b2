"""A state built from a run row read just before another request closed the round: the round's
old ``D`` file is removed on that commit, so the state is read again instead of failing (500)."""

from __future__ import annotations

import base64

from django.core.files.base import ContentFile

from marketplace.finetuning import rounds
from marketplace.finetuning.models import FineTuningRun
from tests.finetuning.conftest import make_parent, sites_for, start_run


def test_a_state_whose_offset_file_vanished_is_read_again(owner, vendor, fl_task, monkeypatch):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=2)
    stale = FineTuningRun.objects.get(id=run_id)  # read "before the other request's commit"
    assert stale.phase == "keys" and stale.offset
    fresh = FineTuningRun.objects.get(id=run_id)
    old_name, storage = fresh.offset.name, fresh.offset.storage
    fresh.offset.save("offset.safetensors", ContentFile(b"new offset bytes"), save=True)
    storage.delete(old_name)  # what the closing request's on_commit does

    real = rounds.run_for_site
    calls = []

    def first_stale(**kwargs):
        run, participant = real(**kwargs)
        calls.append(1)
        return (stale if len(calls) == 1 else run), participant

    monkeypatch.setattr(rounds, "run_for_site", first_stale)
    state = rounds.run_state_for_site(site=sites[0].handle.site, run_id=run_id)
    assert len(calls) == 2
    assert base64.b64decode(state["offset"]["safetensors"]) == b"new offset bytes"
