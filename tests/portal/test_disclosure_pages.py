"""The disclosure policy in the portal: the task form's policy fields, the release queue, the
close confirmation and the private board, the Ladder on the task page, final nominations, and
the privacy loss per vendor in the owner's ledger."""

import re

import pytest

from marketplace.catalog.models import Task
from marketplace.catalog.services import task_close
from marketplace.jobs.models import Job
from marketplace.portal.forms import TaskForm
from marketplace.submissions.models import Submission
from tests.conftest import make_site, make_task, register_shard
from tests.portal.helpers import hold, reveal, score, upload_model, visible

POLICY_FIELDS = [
    "public_split_fraction", "final_submissions", "leaderboard_mode", "requires_release_approval",
    "failed_jobs_consume_quota", "requires_job_approval", "show_per_site", "min_test_rows",
    "dp_epsilon_per_release", "dp_delta", "dp_vendor_epsilon", "dp_task_epsilon", "release_delay_seconds",
    "ladder_threshold",
]  # fmt: skip


def _messages(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


# --- the task form ------------------------------------------------------------------------------


def test_task_form_offers_every_policy_field_with_a_privacy_help_text(owner, web):
    page = web(owner).get("/manage/tasks/new/").content.decode()
    for name in POLICY_FIELDS:
        assert f'name="{name}"' in page, name
        help_text = str(TaskForm.base_fields[name].help_text)
        assert help_text and help_text.split(":")[0].split(",")[0][:40] in page.replace("&#x27;", "'"), name
    # A new task counts failed runs against the quota and takes two finals unless the owner says otherwise.
    assert re.search(r'<input[^>]*name="failed_jobs_consume_quota"[^>]*checked', page)
    assert re.search(r'<input[^>]*name="final_submissions"[^>]*value="2"', page)


def test_task_form_renders_every_field_of_the_form(owner, web):
    page = web(owner).get("/manage/tasks/new/").content.decode()
    for name in TaskForm(organizations=[owner.organization]).fields:
        if name != "organization":  # shown only to people in several data-owner organizations
            assert f'name="{name}"' in page, name


def test_owner_changes_the_policy_of_an_open_task(owner, web):
    from tests.portal.test_owner_pages import FULL_FORM

    task = make_task(owner)
    form = {**FULL_FORM, "public_split_fraction": "1.0", "final_submissions": "4", "leaderboard_mode": "ladder",
            "requires_release_approval": "on", "failed_jobs_consume_quota": "", "dp_vendor_epsilon": "12",
            "dp_epsilon_per_release": "3"}  # fmt: skip
    assert web(owner).post(f"/manage/tasks/{task.id}/edit/", form).status_code == 302
    task.refresh_from_db()
    assert (task.final_submissions, task.leaderboard_mode, task.dp_vendor_epsilon) == (4, "ladder", 12.0)
    assert task.requires_release_approval and not task.failed_jobs_consume_quota
    # The noise of a release is fixed once the task has opened: releases already made used it.
    assert task.dp_epsilon_per_release == 1.0
    page = web(owner).get(f"/manage/tasks/{task.id}/edit/").content.decode()
    assert re.search(r'<input[^>]*name="dp_vendor_epsilon"[^>]*value="12.0"', page)
    assert re.search(r'<input[^>]*name="dp_epsilon_per_release"[^>]*disabled', page)
    assert re.search(r'<input[^>]*name="requires_release_approval"[^>]*checked', page)


def test_the_split_is_fixed_once_the_task_has_opened(owner, web):
    from tests.portal.test_owner_pages import FULL_FORM

    task = make_task(owner)
    assert (
        web(owner)
        .post(f"/manage/tasks/{task.id}/edit/", {**FULL_FORM, "public_split_fraction": "0.3"})
        .status_code
        == 302
    )
    task.refresh_from_db()
    assert task.public_split_fraction == 1.0
    page = web(owner).get(f"/manage/tasks/{task.id}/edit/").content.decode()
    assert re.search(r'<input[^>]*name="public_split_fraction"[^>]*disabled', page)


def test_service_refusals_of_policy_values_land_on_their_fields(owner, web):
    from tests.portal.test_owner_pages import FULL_FORM

    response = web(owner).post("/manage/tasks/new/", {**FULL_FORM, "dp_vendor_epsilon": "30"})
    assert response.status_code == 400
    assert response.context["form"].errors["dp_task_epsilon"] == [
        "dp_task_epsilon must be at least dp_vendor_epsilon."
    ]
    response = web(owner).post("/manage/tasks/new/", {**FULL_FORM, "dp_delta": "0.01"})
    assert "dp_delta" in response.context["form"].errors
    response = web(owner).post("/manage/tasks/new/", {**FULL_FORM, "public_split_fraction": "0"})
    assert response.context["form"].errors["public_split_fraction"] == [
        "public_split_fraction must be in (0, 1]."
    ]
    response = web(owner).post("/manage/tasks/new/", {**FULL_FORM, "final_submissions": "21"})
    assert "final_submissions" in response.context["form"].errors
    assert not Task.objects.exists()


# --- results held for release -------------------------------------------------------------------


@pytest.fixture
def held(owner, vendor):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, title="Held task", requires_release_approval=True)
    register_shard(north, task)
    register_shard(south, task)
    submission = upload_model(vendor, task, name="Held model")
    return {"task": task, "north": hold(north, submission), "south": hold(south, submission), "site": north}


def test_approval_queue_lists_held_results_without_their_values(held, owner, web):
    page = web(owner).get("/manage/approvals/").content.decode()
    row = page.split(f'data-held-job="{held["north"].id}"', 1)[1].split("</tr>", 1)[0]
    assert "Held task" in row and "north" in row and "Acme Models" in row and "Held model" in row
    assert "Release" in row and "Withhold" in row
    assert f'data-held-job="{held["south"].id}"' in page
    assert "Approvals (2)" in web(owner).get("/manage/").content.decode()


def test_owner_releases_and_withholds_held_results(held, owner, web):
    client = web(owner)
    response = client.post(f"/manage/approvals/results/{held['north'].id}/release/", follow=True)
    assert "released; the site sends it at its next poll" in _messages(response)
    client.post(f"/manage/approvals/results/{held['south'].id}/withhold/")
    assert Job.objects.get(id=held["north"].id).release_decision == "approved"
    assert Job.objects.get(id=held["south"].id).release_decision == "refused"
    # The site learns the owner's decisions at its next poll, exactly as after the API's release.
    pending = held["site"].client.get("/api/v1/agent/pending").json()["releases"]
    assert pending == [{"job_id": held["north"].id, "decision": "approved"}]
    page = client.get("/manage/approvals/").content.decode()
    assert "Released" in page and "Withheld" in page and "/release/" not in page


def test_a_second_release_decision_is_refused_with_a_message(held, owner, web):
    client = web(owner)
    client.post(f"/manage/approvals/results/{held['north'].id}/withhold/")
    response = client.post(f"/manage/approvals/results/{held['north'].id}/release/", follow=True)
    assert "Only a held result without a decision" in _messages(response)
    assert Job.objects.get(id=held["north"].id).release_decision == "refused"


def test_only_the_tasks_owner_releases_a_held_result(held, other_owner, vendor, web):
    job = held["north"]
    assert web(other_owner).post(f"/manage/approvals/results/{job.id}/release/").status_code == 404
    assert web(vendor).post(f"/manage/approvals/results/{job.id}/release/").status_code == 403
    assert (
        web(None)
        .post(f"/manage/approvals/results/{job.id}/release/")["Location"]
        .startswith("/accounts/login/")
    )
    assert web(other_owner).get("/manage/approvals/").content.decode().count("data-held-job") == 0
    assert Job.objects.get(id=job.id).release_decision == ""


def test_release_needs_post_and_a_known_word(held, owner, web):
    job = held["north"]
    assert web(owner).get(f"/manage/approvals/results/{job.id}/release/").status_code == 405
    assert web(owner).post(f"/manage/approvals/results/{job.id}/approve/").status_code == 404


# --- closing: the confirmation page, then the private board ---------------------------------------


@pytest.fixture
def finals(owner, vendor, second_vendor):
    site = make_site(owner, "north")
    task = make_task(owner, title="Split task", public_split_fraction=0.5, final_submissions=1)
    register_shard(site, task)
    first, second = upload_model(vendor, task, name="first"), upload_model(vendor, task, name="second")
    other = upload_model(second_vendor, task, name="other")
    jobs = {}
    for submission, auc in ((first, 0.9), (second, 0.8), (other, 0.85)):
        jobs[submission.name] = score(site, submission, {"roc_auc": auc, "accuracy": 0.8})
    return {"site": site, "task": task, "jobs": jobs, "first": first, "second": second, "other": other}


def test_open_task_shows_no_private_board(finals, web):
    page = web(None).get(f"/tasks/{finals['task'].id}/").content.decode()
    assert "Private leaderboard" not in page and "data-final-row" not in page


def _confirmation(web, owner, task) -> str:
    return web(owner).get(f"/manage/tasks/{task.id}/close/").content.decode()


def test_close_confirmation_lists_only_the_finals_to_reveal(finals, owner, vendor, web):
    task = finals["task"]
    assert web(vendor).post(f"/submissions/{finals['second'].id}/nominate/").status_code == 302
    assert f'href="/manage/tasks/{task.id}/close/"' in web(owner).get(f"/manage/tasks/{task.id}/").content.decode()
    page = _confirmation(web, owner, task)
    # The vendor's nominated final, and the other vendor's best public one: not "first", its best.
    assert sorted(re.findall(r'data-reveal="(\d+)"', page)) == sorted([str(finals["second"].id), str(finals["other"].id)])
    assert f'data-reveal="{finals["first"].id}"' not in page
    second = page.split(f'data-reveal="{finals["second"].id}"', 1)[1].split("</tr>", 1)[0]
    assert "Nominated" in second and "Acme Models" in second
    assert "Best public" in page.split(f'data-reveal="{finals["other"].id}"', 1)[1].split("</tr>", 1)[0]
    assert "Confirming approves these reveals" in page and "ε = 1 (δ = 1e-06)" in page
    assert "reveal 2 private scores" in page
    task.refresh_from_db()
    assert task.status == "open"  # looking is not closing


def test_close_confirmation_lists_what_does_not_fit_the_private_budget(owner, vendor, second_vendor, web):
    site = make_site(owner, "north")
    task = make_task(owner, public_split_fraction=0.5, final_submissions=2, dp_epsilon_per_release=5,
                     dp_vendor_epsilon=5, dp_task_epsilon=10)  # fmt: skip
    register_shard(site, task)
    # The public budget allows one upload per vendor; the private one, one reveal per vendor.
    for persona, name in ((vendor, "a"), (second_vendor, "b")):
        score(site, upload_model(persona, task, name=name), {"roc_auc": 0.8, "accuracy": 0.7})
    page = _confirmation(web, owner, task)
    assert len(re.findall(r'data-reveal="', page)) == 2 and "data-not-revealed" not in page
    LeaderboardEntry = __import__("marketplace.leaderboard.models", fromlist=["x"]).LeaderboardEntry
    # A vendor's private budget already spent (say, at an earlier close): its final does not fit.
    from marketplace.budgets.models import PrivacyBudget

    PrivacyBudget.objects.update_or_create(
        task=task, vendor=vendor.organization, split="private", defaults={"rho_spent": 1e9}
    )
    page = _confirmation(web, owner, task)
    a = LeaderboardEntry.objects.get(submission__name="a").submission_id
    assert re.findall(r'data-not-revealed="(\d+)"', page) == [str(a)]
    assert "the vendor's private-split budget" in page and len(re.findall(r'data-reveal="', page)) == 1


def test_confirming_closes_and_approves_exactly_the_listed_reveals(finals, owner, vendor, web):
    task = finals["task"]
    web(vendor).post(f"/submissions/{finals['second'].id}/nominate/")
    page = _confirmation(web, owner, task)
    shown = re.findall(r'name="reveal" value="(\d+)"', page)
    response = web(owner).post(f"/manage/tasks/{task.id}/close/", {"reveal": shown}, follow=True)
    assert "Task closed. Private scores to reveal: 2." in _messages(response)
    task.refresh_from_db()
    assert task.status == "closed"
    from marketplace.leaderboard.models import LeaderboardEntry

    approved = LeaderboardEntry.objects.filter(task=task, reveal_approved=True).values_list("submission_id", flat=True)
    assert sorted(map(str, approved)) == sorted(shown)


def test_a_plan_that_changed_since_the_page_was_shown_is_not_confirmed(finals, owner, vendor, web):
    task = finals["task"]
    shown = re.findall(r'name="reveal" value="(\d+)"', _confirmation(web, owner, task))
    web(vendor).post(f"/submissions/{finals['second'].id}/nominate/")  # the vendor changes its final meanwhile
    response = web(owner).post(f"/manage/tasks/{task.id}/close/", {"reveal": shown}, follow=True)
    assert "has changed since you opened this page" in _messages(response)
    task.refresh_from_db()
    assert task.status == "open"
    assert f'data-reveal="{finals["second"].id}"' in response.content.decode()


def test_only_the_owner_sees_or_confirms_the_close(finals, other_owner, vendor, web):
    url = f"/manage/tasks/{finals['task'].id}/close/"
    assert web(other_owner).get(url).status_code == 404
    assert web(other_owner).post(url).status_code == 404
    assert web(vendor).get(url).status_code == 403
    assert web(None).get(url)["Location"].startswith("/accounts/login/")
    finals["task"].refresh_from_db()
    assert finals["task"].status == "open"


def test_closed_task_shows_the_private_board_beside_the_public_one(finals, owner, vendor, web):
    task, jobs = finals["task"], finals["jobs"]
    assert web(vendor).post(f"/submissions/{finals['second'].id}/nominate/").status_code == 302
    task_close(task=task, actor=owner.user)
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    assert (
        "Private leaderboard (final)" in page
        and "The sites have not revealed the private scores yet." in page
    )
    for name, auc in (("second", 0.88), ("other", 0.86)):
        reveal(finals["site"], jobs[name], {"roc_auc": auc, "accuracy": 0.7})
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    private, public = page.split('id="final-board"', 1)[1].split('id="leaderboard"', 1)
    assert "Public leaderboard (as it stood at close)" in public
    # Only the nominated submission (and the other vendor's best public one) is on the final board.
    final_ids = re.findall(r'data-final-row="(\d+)"', private)
    assert final_ids == [str(finals["second"].id), str(finals["other"].id)]
    second_row = private.split(f'data-final-row="{finals["second"].id}"', 1)[1].split("</tr>", 1)[0]
    assert "Nominated" in second_row and "0.8800" in second_row
    other_row = private.split(f'data-final-row="{finals["other"].id}"', 1)[1].split("</tr>", 1)[0]
    assert "Best public" in other_row and "0.8600" in other_row
    assert "first" in public and "0.9000" in public


def test_a_closed_task_without_a_private_split_has_one_board(owner, vendor, web):
    site = make_site(owner, "north")
    task = make_task(owner)
    register_shard(site, task)
    score(site, upload_model(vendor, task), {"roc_auc": 0.9, "accuracy": 0.8})
    task_close(task=task, actor=owner.user)
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    assert "Private leaderboard" not in page and "0.9000" in page


def test_invite_only_private_board_stays_with_approved_vendors(owner, vendor, outsider, web):
    site = make_site(owner, "north")
    task = make_task(owner, visibility="invite_only", public_split_fraction=0.5)
    register_shard(site, task)
    task_close(task=task, actor=owner.user)
    assert web(outsider).get(f"/tasks/{task.id}/").status_code == 404
    page = web(vendor).get(f"/tasks/{task.id}/").content.decode()
    assert "Private leaderboard" not in page  # not approved: neither board


# --- the leaderboard: release times and the Ladder ------------------------------------------------


def test_the_board_shows_a_score_only_once_its_release_time_has_passed(owner, vendor, web):
    site = make_site(owner, "north")
    task = make_task(owner, release_delay_seconds=600)
    register_shard(site, task)
    submission = upload_model(vendor, task, name="early bird")
    score(site, submission, {"roc_auc": 0.9, "accuracy": 0.8}, show=False)
    for persona in (None, vendor):
        page = web(persona).get(f"/tasks/{task.id}/").content.decode()
        assert "early bird" not in page and "No scored submissions yet." in page
        assert "early bird" not in web(persona).get(f"/tasks/{task.id}/leaderboard/").content.decode()
    assert "early bird" in web(owner).get(f"/tasks/{task.id}/").content.decode()  # the owner sees all
    visible(submission)
    assert "early bird" in web(None).get(f"/tasks/{task.id}/").content.decode()


def test_ladder_task_shows_each_vendors_best_improving_entry(owner, vendor, second_vendor, web):
    from marketplace.leaderboard.models import LeaderboardEntry

    site = make_site(owner, "north")
    task = make_task(owner, leaderboard_mode="ladder", ladder_threshold=0.02)
    register_shard(site, task)
    a = upload_model(vendor, task, name="a")
    score(site, a, {"roc_auc": 0.9, "accuracy": 0.8})
    latest = upload_model(vendor, task, name="b")
    score(site, latest, {"roc_auc": 0.91, "accuracy": 0.8})
    mover = upload_model(second_vendor, task, name="c")
    score(site, mover, {"roc_auc": 0.8, "accuracy": 0.7})
    # The hub's Ladder marked b as no improvement (0.91 does not beat 0.9 by 0.02).
    LeaderboardEntry.objects.filter(submission=a).update(ladder_improved=True)
    LeaderboardEntry.objects.filter(submission=latest).update(ladder_improved=False)
    LeaderboardEntry.objects.filter(submission=mover).update(ladder_improved=True)
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    assert "Ladder mode" in page and "data-ladder" in page and "at least 0.02" in page
    board = page.split('id="leaderboard-live"', 1)[1]
    assert "<td>a" in board and "<td>c" in board and "<td>b" not in board and "0.9100" not in page
    mine = web(vendor).get("/submissions/").content.decode()
    row = mine.split(f'data-submission="{latest.id}"', 1)[1].split("</tr>", 1)[0]
    assert "data-no-improvement" in row and "0.9100" not in row  # the Ladder releases no new score


def test_plain_task_marks_nothing(owner, vendor, web):
    site = make_site(owner, "north")
    task = make_task(owner)
    register_shard(site, task)
    score(site, upload_model(vendor, task), {"roc_auc": 0.9, "accuracy": 0.8})
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    assert "Ladder mode" not in page and "no improvement" not in page


def test_task_page_states_the_mechanism_and_the_budget_to_everyone(owner, vendor, web):
    task = make_task(owner, dp_epsilon_per_release=0.5, dp_delta=1e-7, dp_vendor_epsilon=8, dp_task_epsilon=16)
    for persona in (None, vendor, owner):
        policy = web(persona).get(f"/tasks/{task.id}/").content.decode().split("data-privacy-policy", 1)[1]
        policy = policy.split("</section>", 1)[0]
        assert "ε = 0.5, δ = 1e-07 per submission" in policy and "ε = 8 per organization" in policy
        assert "ε = 16" in policy and "Gaussian" in policy and "Opacus" in policy
    # Only a vendor sees its own budget line; the visitor and the owner have none.
    assert "data-privacy-budget" in web(vendor).get(f"/tasks/{task.id}/").content.decode()
    assert "data-privacy-budget" not in web(None).get(f"/tasks/{task.id}/").content.decode()
    assert "data-privacy-budget" not in web(owner).get(f"/tasks/{task.id}/").content.decode()


# --- final nominations in 'my submissions' ------------------------------------------------------


def test_vendor_nominates_and_unpicks_finals_within_the_limit(finals, vendor, web):
    client = web(vendor)
    first, second = finals["first"], finals["second"]
    page = client.get("/submissions/").content.decode()
    assert "0 of 1 chosen" in page and f'action="/submissions/{first.id}/nominate/"' in page
    response = client.post(f"/submissions/{first.id}/nominate/", follow=True)
    assert "first nominated as final (1 of 1 chosen)." in _messages(response)
    response = client.post(f"/submissions/{second.id}/nominate/", follow=True)
    assert "This task takes 1 final submission(s): unpick one first." in _messages(response)
    assert list(Submission.objects.filter(is_final=True)) == [first]
    page = client.get("/submissions/").content.decode()
    assert "1 of 1 chosen" in page and f'action="/submissions/{first.id}/unnominate/"' in page
    client.post(f"/submissions/{first.id}/unnominate/")
    assert not Submission.objects.filter(is_final=True).exists()


def test_only_scored_submissions_can_be_nominated(owner, vendor, web):
    task = make_task(owner)
    register_shard(make_site(owner, "north"), task)
    pending = upload_model(vendor, task)
    page = web(vendor).get("/submissions/").content.decode()
    assert f"/submissions/{pending.id}/nominate/" not in page
    response = web(vendor).post(f"/submissions/{pending.id}/nominate/", follow=True)
    assert "Only a scored submission can be nominated." in _messages(response)
    assert not Submission.objects.get(id=pending.id).is_final


def test_finals_are_fixed_once_the_task_closes(finals, owner, vendor, web):
    task_close(task=finals["task"], actor=owner.user)
    page = web(vendor).get("/submissions/").content.decode()
    assert "/nominate/" not in page and "/unnominate/" not in page
    response = web(vendor).post(f"/submissions/{finals['first'].id}/nominate/", follow=True)
    assert "final submissions are fixed" in _messages(response)
    assert not Submission.objects.filter(is_final=True).exists()


def test_only_the_submitting_vendor_nominates(finals, owner, second_vendor, outsider, web):
    url = f"/submissions/{finals['first'].id}/nominate/"
    assert web(second_vendor).post(url).status_code == 404
    assert web(owner).post(url).status_code == 403
    assert web(outsider).post(url).status_code == 403
    assert web(None).post(url)["Location"].startswith("/accounts/login/")
    assert web(second_vendor).get(url).status_code == 405
    assert not Submission.objects.filter(is_final=True).exists()


def test_my_submissions_shows_held_results_as_pending_only(held, vendor, web):
    page = web(vendor).get("/submissions/").content.decode()
    row = page.split('data-submission="', 1)[1].split("</tr>", 1)[0]
    assert "Pending" in row and "Held at the site" not in row and "north" not in row
    # The only times on the row are the upload's own and the release grid's: no run times.
    assert len(re.findall(r"\d\d:\d\d", row)) == 2 and "until ~" in row


# --- privacy loss per vendor in the owner's ledger --------------------------------------------


@pytest.fixture
def leaky(owner, other_owner, vendor, second_vendor):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, title="Budgeted task")
    register_shard(north, task)
    register_shard(south, task)
    for name in ("a", "b"):
        mine = upload_model(vendor, task, name=name)
        score(north, mine, {"roc_auc": 0.9, "accuracy": 0.8})
        score(south, mine, {"roc_auc": 0.9, "accuracy": 0.8})
    theirs = upload_model(second_vendor, task)
    score(north, theirs, {"roc_auc": 0.9, "accuracy": 0.8})
    score(south, theirs, {"roc_auc": 0.9, "accuracy": 0.8})
    other = make_task(owner, title="Other task")
    register_shard(north, other)
    score(north, upload_model(vendor, other), {"roc_auc": 0.9, "accuracy": 0.8})
    return {"task": task, "other": other}


def test_ledger_shows_each_releases_cost_and_the_composed_epsilon_per_vendor(leaky, owner, vendor, second_vendor, web):
    from evaluator.privacy.zcdp import epsilon_for_rho, rho_for_epsilon

    task = leaky["task"]
    page = web(owner).get(f"/manage/ledger/?task={task.id}").content.decode()
    assert "Budgeted task" in page and "ε = 10 per vendor" in page and "Opacus" in page
    rho = rho_for_epsilon(1.0, 1e-6)
    acme = page.split(f'data-leakage-row="{vendor.organization.id}"', 1)[1].split("</tr>", 1)[0]
    # Two submissions, each released at two sites (disjoint rows): 4 releases, two rhos composed.
    assert ">4<" in acme and f"{epsilon_for_rho(2 * rho, 1e-6):.3f}" in acme
    globex = page.split(f'data-leakage-row="{second_vendor.organization.id}"', 1)[1].split("</tr>", 1)[0]
    assert ">2<" in globex and "1.000" in globex
    rows = re.findall(r"<tr data-ledger-row>.*?</tr>", page, re.S)
    assert len(rows) == 6  # the filtered table beside it
    assert all(f"{rho:.4g}" in row and "1.000" in row and "1e-06" in row for row in rows)
    assert "Bits" not in page and "bits" not in page


def test_ledger_asks_for_a_task_before_showing_the_loss(leaky, owner, web):
    page = web(owner).get("/manage/ledger/").content.decode()
    assert "Choose a task in the filter" in page and "data-leakage-row" not in page


def test_another_owner_cannot_see_the_loss_on_my_task(leaky, other_owner, web):
    response = web(other_owner).get(f"/manage/ledger/?task={leaky['task'].id}")
    assert response.status_code == 200
    assert (
        "data-leakage-row" not in response.content.decode() and "Budgeted task" not in response.content.decode()
    )
