"""Federated fine-tuning in the portal: the vendor's request form, runs list and live run page,
the owner's approval queue and run page with the privacy accounting, the task form's FL policy,
and fine-tuned entries on the leaderboard. Sites drive the real agent API (tests/finetuning)."""

import io
import zipfile
from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace.audit.models import AuditEvent
from marketplace.catalog.models import Task
from marketplace.finetuning.models import FineTuningRun, Participant, RoundRecord, RoundStatus, RunStatus
from marketplace.finetuning.services import run_approve, run_request
from marketplace.jobs.models import JobKind
from marketplace.submissions.models import Submission
from marketplace.submissions.services import submission_check
from tests.conftest import TASK_SPEC, make_task
from tests.finetuning.conftest import make_parent, secagg_round, sites_for, start_run, updates_for
from tests.portal.helpers import score, upload_model, visible

ROLES = ["visitor", "outsider", "vendor", "second_vendor", "owner", "other_owner"]
LOGIN = "login"


def _logged_in(status, **overrides):
    return {**dict.fromkeys(ROLES, status), "visitor": LOGIN, **overrides}


def _request(parent, actor, **overrides):
    values = {"rounds": 2, "learning_rate": 0.05, "round_timeout_seconds": 60, **overrides}
    return run_request(parent=parent, actor=actor, **values)


@pytest.fixture
def fl(owner, vendor):
    """A task that allows fine-tuning, three sites with its data, a scored TorchScript parent."""
    task = make_task(owner, title="FL task", fine_tuning_allowed=True)
    sites = sites_for(owner, task, 3)
    parent = visible(make_parent(vendor, task))
    return {"task": task, "sites": sites, "parent": parent}


@pytest.fixture
def world(fl, owner, other_owner, vendor, second_vendor, outsider):
    requested = _request(fl["parent"], vendor.user)
    return {
        **fl,
        "run": requested,
        "personas": {"owner": owner, "other_owner": other_owner, "vendor": vendor, "second_vendor": second_vendor,
                     "outsider": outsider, "visitor": None},
    }  # fmt: skip


def _record(run, round_number, *, sites, loss, accuracy, epsilon, attempt=0, status=RoundStatus.AGGREGATED):
    """A round as rounds._apply_round stores it (the protocol itself is tested in tests/finetuning)."""
    now = timezone.now()
    per_site = [
        {"participant": i + 1, "site": name, "train_loss": loss + 0.01 * i, "n_examples": 80,
         "validation": {"accuracy": accuracy - 0.01 * i, "log_loss": loss}, "n_validation": 20,
         "epsilon": None if epsilon is None else epsilon + 0.001 * i}
        for i, name in enumerate(sites)
    ]  # fmt: skip
    return RoundRecord.objects.create(
        run=run, round=round_number, attempt=attempt, status=status, n_contributors=len(sites), train_loss=loss,
        validation={"accuracy": accuracy, "log_loss": loss}, per_site=per_site, epsilon=epsilon,
        started_at=now - timedelta(minutes=1), finished_at=now,
    )  # fmt: skip


# --------------------------------------------------------------------------- who may see what

VENDOR_RUN = _logged_in(403, vendor=200, second_vendor=404)
OWNER_RUN = _logged_in(403, owner=200, other_owner=404)

PAGES = [
    ("fine-tune form", "/submissions/{parent}/fine-tune/", VENDOR_RUN),
    ("fine-tune form, missing submission", "/submissions/999999/fine-tune/", _logged_in(403, vendor=404, second_vendor=404)),
    ("vendor runs", "/fine-tuning/", _logged_in(403, vendor=200, second_vendor=200)),
    ("vendor run", "/fine-tuning/{run}/", VENDOR_RUN),
    ("vendor run, live part", "/fine-tuning/{run}/status/", VENDOR_RUN),
    ("missing run", "/fine-tuning/999999/", _logged_in(403, vendor=404, second_vendor=404)),
    ("owner runs", "/manage/fine-tuning/", _logged_in(403, owner=200, other_owner=200)),
    ("owner run", "/manage/fine-tuning/{run}/", OWNER_RUN),
    ("owner run, live part", "/manage/fine-tuning/{run}/status/", OWNER_RUN),
    ("approvals", "/manage/approvals/", _logged_in(403, owner=200, other_owner=200)),
]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "url", "expected"), PAGES, ids=[p[0] for p in PAGES])
def test_fine_tuning_page_answers_each_role(world, web, role, name, url, expected):
    response = web(world["personas"][role]).get(url.format(parent=world["parent"].id, run=world["run"].id))
    want = expected[role]
    if want == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    else:
        assert response.status_code == want, f"{name} as {role}: {response.status_code}"


ACTIONS = [
    ("approve run", "/manage/approvals/runs/{run}/approve/", "owner", RunStatus.RUNNING),
    ("reject run", "/manage/approvals/runs/{run}/reject/", "owner", RunStatus.REJECTED),
    ("stop run as vendor", "/fine-tuning/{run}/stop/", "vendor", RunStatus.STOPPED),
    ("stop run as owner", "/manage/fine-tuning/{run}/stop/", "owner", RunStatus.STOPPED),
]


@pytest.mark.parametrize(("name", "url", "allowed", "after"), ACTIONS, ids=[a[0] for a in ACTIONS])
@pytest.mark.parametrize("role", ROLES)
def test_fine_tuning_actions_refuse_other_roles(world, web, role, name, url, allowed, after):
    run = world["run"]
    before = AuditEvent.objects.count()
    response = web(world["personas"][role]).post(url.format(run=run.id))
    run.refresh_from_db()
    if role == allowed:
        assert response.status_code == 302
        assert run.status == after and AuditEvent.objects.count() > before
    else:
        assert response.status_code in (302, 403, 404)
        if role == "visitor":
            assert response["Location"].startswith("/accounts/login/")
        else:
            assert response.status_code in (403, 404)
        assert run.status == RunStatus.REQUESTED and AuditEvent.objects.count() == before


@pytest.mark.parametrize("role", ["visitor", "outsider", "second_vendor", "owner"])
def test_only_the_submissions_vendor_may_request_a_run(world, web, role):
    form = {"rounds": 3, "local_epochs": 1, "batch_size": 32, "learning_rate": 0.01, "strategy": "fedavg",
            "min_sites": 1, "round_timeout_seconds": 600}  # fmt: skip
    response = web(world["personas"][role]).post(f"/submissions/{world['parent'].id}/fine-tune/", form)
    assert response.status_code in (302, 403, 404)
    assert response.status_code != 302 or response["Location"].startswith("/accounts/login/")
    assert FineTuningRun.objects.count() == 1


def test_run_actions_need_post_and_known_words(world, web):
    owner = world["personas"]["owner"]
    assert web(owner).get(f"/manage/approvals/runs/{world['run'].id}/approve/").status_code == 405
    assert web(owner).post(f"/manage/approvals/runs/{world['run'].id}/start/").status_code == 404


# --------------------------------------------------------------------------- vendor pages


def test_my_submissions_offers_fine_tuning_only_for_trainable_scored_models(fl, owner, vendor, web):
    sklearn = upload_model(vendor, fl["task"], name="forest")  # scored, but not trainable
    for site in fl["sites"]:
        score(site.handle, sklearn, {"roc_auc": 0.8, "accuracy": 0.7})
    assert Submission.objects.get(id=sklearn.id).status == "scored"
    checking = make_parent(vendor, fl["task"], status="checking")
    closed_to_ft = make_task(owner, title="No FL task")
    other = make_parent(vendor, closed_to_ft)
    page = web(vendor).get("/submissions/").content.decode()
    assert f'data-fine-tune="{fl["parent"].id}"' in page
    assert f"/submissions/{fl['parent'].id}/fine-tune/" in page
    for submission in (sklearn, checking, other):
        assert f'data-fine-tune="{submission.id}"' not in page


def test_vendor_requests_a_fedprox_run_through_the_form(fl, vendor, web):
    page = web(vendor).get(f"/submissions/{fl['parent'].id}/fine-tune/").content.decode()
    assert "data-task-policy" in page and 'name="proximal_mu"' in page and "fedadam" in page
    form = {"rounds": 5, "local_epochs": 2, "batch_size": 16, "learning_rate": 0.02, "strategy": "fedprox",
            "proximal_mu": 0.1, "min_sites": 2, "round_timeout_seconds": 300}  # fmt: skip
    response = web(vendor).post(f"/submissions/{fl['parent'].id}/fine-tune/", form)
    run = FineTuningRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/fine-tuning/{run.id}/"
    assert (run.status, run.rounds, run.local_epochs, run.batch_size, run.min_sites) == (
        "requested",
        5,
        2,
        16,
        2,
    )
    assert run.strategy == "fedprox" and run.strategy_params == {"proximal_mu": 0.1}
    assert run.requested_by == vendor.user and run.parent == fl["parent"]
    assert AuditEvent.objects.filter(action="finetuning.requested").count() == 1
    page = web(vendor).get(response["Location"]).content.decode()
    assert "Waiting for the task's owner to approve the run." in page
    assert f'hx-get="/fine-tuning/{run.id}/status/"' in page and "Stop the run" in page


def test_mu_is_sent_only_with_fedprox(fl, vendor, web):
    form = {"rounds": 5, "local_epochs": 1, "batch_size": 16, "learning_rate": 0.02, "strategy": "fedavg",
            "proximal_mu": 0.1, "min_sites": 1, "round_timeout_seconds": 300}  # fmt: skip
    assert web(vendor).post(f"/submissions/{fl['parent'].id}/fine-tune/", form).status_code == 302
    assert FineTuningRun.objects.get().strategy_params == {}


def test_the_service_refusal_is_shown_on_the_form(owner, vendor, web):
    task = make_task(owner, title="Two sites", fine_tuning_allowed=True)
    sites_for(owner, task, 2)  # secure aggregation needs three
    parent = make_parent(vendor, task, released=False)
    form = {"rounds": 5, "local_epochs": 1, "batch_size": 16, "learning_rate": 0.02, "strategy": "fedavg",
            "min_sites": 1, "round_timeout_seconds": 300}  # fmt: skip
    # Scored, but not yet at its release time: refused as if it were still pending.
    response = web(vendor).post(f"/submissions/{parent.id}/fine-tune/", form)
    assert response.status_code == 400 and "Only a scored submission can be fine-tuned." in response.content.decode()
    visible(parent)
    response = web(vendor).post(f"/submissions/{parent.id}/fine-tune/", form)
    assert response.status_code == 400
    assert "at least 3 sites" in response.content.decode()
    too_many = web(vendor).post(f"/submissions/{parent.id}/fine-tune/", {**form, "min_sites": 0})
    assert too_many.status_code == 400 and not FineTuningRun.objects.exists()


def test_vendor_runs_list_shows_only_its_own_runs(world, web, second_vendor):
    page = web(world["personas"]["vendor"]).get("/fine-tuning/").content.decode()
    assert f'data-run="{world["run"].id}"' in page and "Requested" in page
    assert f'data-run="{world["run"].id}"' not in web(second_vendor).get("/fine-tuning/").content.decode()


def test_running_run_page_polls_and_draws_weighted_curves_only(world, web, owner, vendor):
    run = run_approve(run=world["run"], actor=owner.user)
    names = [s.handle.site.name for s in world["sites"]]
    _record(run, 0, sites=names, loss=0.9, accuracy=0.6, epsilon=None)
    _record(run, 1, sites=names, loss=0.5, accuracy=0.75, epsilon=None)
    page = web(vendor).get(f"/fine-tuning/{run.id}/").content.decode()
    assert 'data-run-status="running"' in page and f'hx-get="/fine-tuning/{run.id}/status/"' in page
    assert "data-round>1 of 2" in page and "Sites report the parameter layout" in page
    assert 'data-chart="chart-loss"' in page and 'data-chart="chart-validation"' in page
    assert "<svg" in page and 'data-series="All sites (weighted)"' in page
    # The task does not show per-site breakdowns: no site's curve or epsilon reaches the vendor.
    for name in names:
        assert f'data-series="{name}"' not in page and f"ε {name}" not in page
    assert "Per-site curves are hidden" in page
    assert "Download the final model" not in page
    live = web(vendor).get(f"/fine-tuning/{run.id}/status/").content.decode()
    assert live.lstrip().startswith('<div id="run-live"') and "<html" not in live


def test_vendor_sees_per_site_curves_when_the_task_shows_them(world, web, owner, vendor):
    Task.objects.filter(id=world["task"].id).update(show_per_site=True)
    run = run_approve(run=world["run"], actor=owner.user)
    names = [s.handle.site.name for s in world["sites"]]
    _record(run, 0, sites=names, loss=0.9, accuracy=0.6, epsilon=None)
    page = web(vendor).get(f"/fine-tuning/{run.id}/").content.decode()
    for name in names:
        assert f'data-series="{name}"' in page


def test_vendor_stops_its_run_from_the_page(world, web, owner, vendor):
    run = run_approve(run=world["run"], actor=owner.user)
    response = web(vendor).post(f"/fine-tuning/{run.id}/stop/", follow=True)
    run.refresh_from_db()
    assert run.status == RunStatus.STOPPED and run.result is None
    assert all(p.job.status == "failed" for p in Participant.objects.filter(run=run))
    page = response.content.decode()
    assert "stopped; no fine-tuned model is made" in page and 'data-run-status="stopped"' in page
    assert "hx-get=" not in page.split('id="run-live"')[1].split(">")[0]  # polling ends with the run
    again = web(vendor).post(f"/fine-tuning/{run.id}/stop/", follow=True).content.decode()
    assert "The run has already ended." in again


# --------------------------------------------------------------------------- owner pages


def test_approval_queue_shows_the_privacy_settings_that_will_apply(world, web, owner):
    Task.objects.filter(id=world["task"].id).update(
        fl_noise_multiplier=1.1, fl_epsilon_cap=8.0, fl_clip_norm=0.5
    )
    page = web(owner).get("/manage/approvals/").content.decode()
    row = page.split(f'data-run="{world["run"].id}"')[1].split("</tr>")[0]
    assert "Acme Models" in row and "base" in row and "3 sites with data" in row
    privacy = row.split("data-privacy")[1]
    for text in ("Clip norm</dt><dd>0.5", "Noise multiplier</dt><dd>1.1", "Delta</dt><dd>0.00001",
                 "Epsilon cap</dt><dd>8.0", "Secure aggregation</dt><dd>on", "Robust rule</dt><dd>— (sum only)"):  # fmt: skip
        assert text in privacy, text
    assert f"/manage/approvals/runs/{world['run'].id}/approve/" in row


@pytest.mark.parametrize("noise, secret", [(1.1, False), (60.0, True)], ids=["ε ≥ 4", "small ε"])
def test_approval_queue_says_what_the_epsilon_leaves_of_the_training_labels(world, web, owner, noise, secret):
    """The owner decides with the label bound in view: any decoder's best share of labels at the
    planned ε, and a plain warning where the ε keeps nothing secret."""
    Task.objects.filter(id=world["task"].id).update(fl_noise_multiplier=noise, fl_epsilon_cap=None)
    run = FineTuningRun.objects.get(id=world["run"].id)
    summary = run.privacy
    assert summary.label_chance == 0.5 and 0.5 < summary.label_guess_bound <= 1.0
    page = web(owner).get("/manage/approvals/").content.decode()
    cell = page.split(f'data-run="{run.id}"')[1].split("data-label-bound>")[1].split("</dd>")[0]
    assert f"at most {round(summary.label_guess_bound * 100)} %" in cell and "(chance: 50 %)" in cell
    assert ("does not keep labels secret" in cell) is (not secret)


def test_owner_approves_a_run_and_its_sites_get_train_jobs(world, web, owner):
    Task.objects.filter(id=world["task"].id).update(fl_noise_multiplier=1.0, fl_clip_norm=0.5)
    response = web(owner).post(f"/manage/approvals/runs/{world['run'].id}/approve/", follow=True)
    run = FineTuningRun.objects.get(id=world["run"].id)
    assert run.status == RunStatus.RUNNING and run.decided_by == owner.user
    assert (run.noise_multiplier, run.secure_aggregation) == (1.0, True)
    assert run.clip_norm > 0.5 and "clip_norm" in run.hub_defaults  # record-level: DP-SGD's own bound, larger
    participants = Participant.objects.filter(run=run).select_related("job")
    assert len(participants) == 3 and {p.job.kind for p in participants} == {JobKind.TRAIN}
    page = response.content.decode()
    assert f"Fine-tuning run {run.id} approved." in page and "No fine-tuning run waits for you." in page


def test_a_refused_approval_is_shown_and_changes_nothing(world, web, owner):
    Task.objects.filter(id=world["task"].id).update(fine_tuning_allowed=False)
    page = web(owner).post(f"/manage/approvals/runs/{world['run'].id}/approve/", follow=True).content.decode()
    assert "does not allow fine-tuning" in page
    assert FineTuningRun.objects.get(id=world["run"].id).status == RunStatus.REQUESTED


def test_owner_run_page_accounts_epsilon_per_round_and_site(world, web, owner):
    Task.objects.filter(id=world["task"].id).update(fl_noise_multiplier=1.0, fl_epsilon_cap=10.0)
    run = run_approve(run=world["run"], actor=owner.user)
    names = [s.handle.site.name for s in world["sites"]]
    _record(run, 0, sites=names, loss=0.9, accuracy=0.6, epsilon=1.5)
    _record(run, 1, sites=names[:2], loss=0.0, accuracy=0.0, epsilon=1.5, status=RoundStatus.FAILED)
    _record(run, 1, sites=names, loss=0.5, accuracy=0.75, epsilon=2.25, attempt=1)
    FineTuningRun.objects.filter(id=run.id).update(epsilon_spent=2.25, rounds_completed=2)
    page = web(owner).get(f"/manage/fine-tuning/{run.id}/").content.decode()
    assert f'hx-get="/manage/fine-tuning/{run.id}/status/"' in page
    assert "2.250" in page and "of the owner's cap 10.0" in page and "<meter" in page
    for name in names:
        assert f'data-series="{name}"' in page and f"ε {name}" in page
    table = page.split("data-rounds")[1].split("</table>")[0]
    first = table.split('data-round="0.0"')[1].split("</tr>")[0]
    assert [c.split("</td>")[0] for c in first.split("data-site-epsilon>")[1:]] == ["1.500", "1.501", "1.502"]
    assert 'data-round="1.1"' in table and "(retry)" in table and "Failed" in table
    assert "Sites in this run" in page and "Download the final model" not in page


def test_owner_runs_list_shows_runs_on_its_tasks_only(world, web, owner, other_owner):
    assert f'data-run="{world["run"].id}"' in web(owner).get("/manage/fine-tuning/").content.decode()
    assert (
        f'data-run="{world["run"].id}"' not in web(other_owner).get("/manage/fine-tuning/").content.decode()
    )


def test_owner_stops_a_running_run(world, web, owner):
    run = run_approve(run=world["run"], actor=owner.user)
    response = web(owner).post(f"/manage/fine-tuning/{run.id}/stop/")
    assert response.status_code == 302 and response["Location"] == f"/manage/fine-tuning/{run.id}/"
    run.refresh_from_db()
    assert run.status == RunStatus.STOPPED


# --------------------------------------------------------------------------- a whole run


def test_completed_run_offers_the_model_and_the_board_marks_the_fine_tuned_entry(fl, owner, vendor, web):
    run_id = start_run(owner, vendor, fl["parent"], fl["sites"], rounds=1)
    secagg_round(run_id, fl["sites"], updates_for(3))
    run = FineTuningRun.objects.get(id=run_id)
    assert run.status == RunStatus.COMPLETED and run.result is not None
    page = web(vendor).get(f"/fine-tuning/{run_id}/").content.decode()
    assert (
        'data-run-status="completed"' in page and "hx-get" not in page.split('id="run-live"')[1].split(">")[0]
    )
    assert f'href="/api/v1/finetuning-runs/{run_id}/model"' in page and "Stop the run" not in page
    assert 'data-chart="chart-loss"' in page
    # The link works with the portal's session (the API's own endpoint, vendor only).
    download = web(vendor).get(f"/api/v1/finetuning-runs/{run_id}/model")
    assert download.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))).namelist()
    assert "weights_offset.safetensors" in names
    assert web(owner).get(f"/api/v1/finetuning-runs/{run_id}/model").status_code == 404
    assert "Download the final model" not in web(owner).get(f"/manage/fine-tuning/{run_id}/").content.decode()

    # The fine-tuned submission is evaluated like any other and ranks as a fine-tuned entry.
    child = Submission.objects.get(id=run.result_id)
    submission_check(submission_id=child.id)
    plain = upload_model(vendor, fl["task"], name="forest")
    for site in fl["sites"]:
        score(site.handle, child, {"roc_auc": 0.9, "accuracy": 0.8})
        score(site.handle, plain, {"roc_auc": 0.8, "accuracy": 0.7})
    board = web(None).get(f"/tasks/{fl['task'].id}/").content.decode()
    row = board.split(f'data-fine-tuned="{fl["parent"].id}"')
    assert len(row) == 2 and "from base" in row[1].split("</td>")[0]
    api = vendor.client.get(f"/api/v1/tasks/{fl['task'].id}/leaderboard?view=all").json()["results"]
    by_id = {r["submission_id"]: r for r in api}
    assert by_id[child.id]["is_fine_tuned"] is True
    assert by_id[child.id]["parent_submission_id"] == fl["parent"].id
    assert by_id[child.id]["parent_model_name"] == "base"
    assert by_id[plain.id]["is_fine_tuned"] is False
    assert by_id[plain.id]["parent_submission_id"] is None and by_id[plain.id]["parent_model_name"] is None
    mine = web(vendor).get("/submissions/").content.decode()
    assert f'data-fine-tuned="{fl["parent"].id}"' in mine and f'data-fine-tune="{child.id}"' not in mine
    detail = vendor.client.get(f"/api/v1/submissions/{child.id}").json()
    assert detail["is_fine_tuned"] is True and detail["parent_id"] == fl["parent"].id


# --------------------------------------------------------------------------- the task form's FL policy


def _task_form(**overrides):
    form = {"title": "FL policy task", "description": "", "task_type": "binary_classification", "n_features": 30,
            "dtype": "float32", "n_classes": 2, "primary_metric": "roc_auc", "metric_roc_auc": "on",
            "decimals_roc_auc": 4, "visibility": "public", "quota_per_day": 5, "memory_mb": 1024, "cpus": 1.0,
            "timeout_seconds": 300, "max_output_mb": 64, "min_test_rows": 10, "public_split_fraction": 1.0,
            "final_submissions": 2, "leaderboard_mode": "plain", "failed_jobs_consume_quota": "on"}  # fmt: skip
    return {**form, **overrides}


def test_owner_sets_the_fl_privacy_policy_on_the_task_form(owner, web):
    page = web(owner).get("/manage/tasks/new/").content.decode()
    for field in ("fl_clip_norm", "fl_noise_multiplier", "fl_dp_delta", "fl_epsilon_cap", "fl_secure_aggregation",
                  "fl_robust_rule", "fl_quantization_bits"):  # fmt: skip
        assert f'name="{field}"' in page, field
    assert "Federated fine-tuning" in page and "bounds how much one site" in page
    response = web(owner).post("/manage/tasks/new/", _task_form(
        fine_tuning_allowed="on", fl_clip_norm=0.5, fl_noise_multiplier=1.2, fl_dp_delta=1e-6, fl_epsilon_cap=6,
        fl_secure_aggregation="off", fl_robust_rule="median", fl_quantization_bits=16,
    ))  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    task = Task.objects.get(title="FL policy task")
    assert task.fine_tuning_allowed and (task.fl_clip_norm, task.fl_noise_multiplier, task.fl_dp_delta) == (
        0.5,
        1.2,
        1e-6,
    )
    assert (
        task.fl_epsilon_cap,
        task.fl_secure_aggregation,
        task.fl_robust_rule,
        task.fl_quantization_bits,
    ) == (6.0, False, "median", 16)
    edit = web(owner).get(f"/manage/tasks/{task.id}/edit/").content.decode()
    assert '<option value="off" selected>' in edit and '<option value="median" selected>' in edit


def test_the_task_form_shows_fl_policy_errors_on_their_fields(owner, web):
    response = web(owner).post(
        "/manage/tasks/new/", _task_form(fl_secure_aggregation="on", fl_robust_rule="median")
    )
    assert response.status_code == 400
    page = response.content.decode()
    field = page.split('name="fl_robust_rule"')[1]
    assert "only &#x27;mean&#x27; with secure aggregation" in field.split("</div>")[0]
    capped = web(owner).post("/manage/tasks/new/", _task_form(fl_epsilon_cap=5, fl_noise_multiplier=0))
    assert capped.status_code == 400 and "An epsilon cap needs noise" in capped.content.decode()
    assert not Task.objects.filter(title="FL policy task").exists()


def test_a_form_without_fl_fields_keeps_the_defaults(owner, web):
    response = web(owner).post("/manage/tasks/new/", _task_form())
    assert response.status_code == 302
    task = Task.objects.get(title="FL policy task")
    defaults = Task(**{k: v for k, v in TASK_SPEC.items() if k not in ("input_spec", "metrics")})
    assert (task.fl_secure_aggregation, task.fl_robust_rule, task.fl_clip_norm, task.fl_epsilon_cap) == (
        defaults.fl_secure_aggregation,
        defaults.fl_robust_rule,
        defaults.fl_clip_norm,
        8.0,  # the private default; a cap submitted empty is "no cap"
    )
