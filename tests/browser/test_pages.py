"""Every page type in real Chromium at 1280 and 390 px: nothing wider than the viewport, every
scrollable table reachable by keyboard, axe-core finds no serious or critical violation; and
each persona's loop (a vendor from the task page to its own score, an owner from a new task to a
closed one with a bulk-approved queue) at both widths. No Docker: the sites release through the
agent API (tests/portal/helpers.py), as in the portal tests. Screenshots go to docs/screenshots/.

Cost: about 2 minutes (two worlds, ~40 axe runs, four loops)."""

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from marketplace.catalog.services import task_sample_set
from tests.browser.conftest import CHROMIUM, screenshot
from tests.conftest import _persona, make_site, make_task, register_shard, sklearn_like_artifact

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}
RULES = "One team per organization.\nNo external data from the participating hospitals."


def _axe_source() -> str:
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()


@pytest.fixture(scope="session")
def axe_js():
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium")
    return _axe_source()


@pytest.fixture
def person(browser, live_server):
    """person(username or None, width) -> a logged-in page at that viewport (its own cookies)."""
    contexts = []

    def make(username: str | None, width: str = "desktop"):
        w, h = WIDTHS[width]
        # bypass_csp: axe is injected as an inline script; the pages' own CSP stays as served.
        context = browser.new_context(viewport={"width": w, "height": h}, base_url=live_server.url,
                                      accept_downloads=True, bypass_csp=True)  # fmt: skip
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        if username:
            page.goto("/accounts/login/")
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill("correct-horse-battery")
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(lambda url: "/accounts/login/" not in url)
        return page

    yield make
    for context in contexts:
        context.close()


def _sample_file(task, owner):
    import io

    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    np.save(buffer, np.zeros((20, 30), dtype=np.float32))
    task_sample_set(task=task, actor=owner.user, sample=SimpleUploadedFile("rows.npy", buffer.getvalue()),
                    max_bytes=10_000_000)  # fmt: skip


@pytest.fixture
def world(db):
    """An owner with two sites, a public task with a scored board (long names included), a task
    with rules, a gated task with a job queue; two vendors."""
    from tests.portal.helpers import hold, score, upload_model

    owner = _persona("olivia", "St. Mercy Hospitals", "data_owner")
    vendor = _persona("victor", "Acme Models", "vendor")
    other = _persona("vera", "Globex Artificial Intelligence Laboratories", "vendor")
    north, south = make_site(owner, "north"), make_site(owner, "south")
    board = make_task(owner, title="Sepsis onset within six hours", quota_per_day=20, show_per_site=True,
                      metrics=[{"name": "roc_auc", "decimals": 4}, {"name": "log_loss", "decimals": 3}])  # fmt: skip
    _sample_file(board, owner)
    for site in (north, south):
        register_shard(site, board, rows=200)
    scored = []
    for i, persona in enumerate([vendor, other, vendor, other]):
        submission = upload_model(persona, board, name=f"gradient-boosted-trees-with-a-long-name-{i}")
        for site in (north, south):
            score(site, submission, {"roc_auc": 0.8 + i / 50, "log_loss": 0.4 - i / 50})
        scored.append(submission)
    ruled = make_task(owner, title="ICU mortality", rules=RULES)
    register_shard(north, ruled)
    gated = make_task(owner, title="Gated task", requires_job_approval=True, requires_release_approval=True)
    for site in (north, south):
        register_shard(site, gated)
    queued = upload_model(vendor, gated, name="queued model")
    released = upload_model(other, gated, name="held model")
    for job in released.jobs.all():
        job.status = "queued"
        job.save(update_fields=["status"])
    for site in (north, south):
        hold(site, released)
    return {"owner": owner, "vendor": vendor, "other": other, "board": board, "ruled": ruled, "gated": gated,
            "scored": scored, "queued": queued, "sites": (north, south)}  # fmt: skip


def _page_types(w) -> list[tuple[str | None, str, str]]:
    """(who, path, name) for every page type of the portal."""
    board, vendor_sub = w["board"], w["scored"][0]
    return [
        (None, "/", "home"), (None, f"/tasks/{board.id}/", "task"), (None, f"/tasks/{board.id}/?view=all", "board-all"),
        (None, "/how-scores-are-computed/", "scoring"), (None, "/model-contract/", "model-contract"),
        (None, "/accounts/login/", "login"), (None, "/accounts/signup/", "signup"),
        ("victor", "/submissions/", "my-submissions"), ("victor", f"/submissions/{vendor_sub.id}/", "submission-vendor"),
        ("victor", f"/tasks/{w['ruled'].id}/submit/", "upload"), ("victor", f"/tasks/{w['ruled'].id}/", "task-rules"),
        ("victor", "/account/", "account"),
        ("olivia", "/manage/", "owner-desk"), ("olivia", "/manage/tasks/new/", "task-form"),
        ("olivia", f"/manage/tasks/{board.id}/", "manage-task"), ("olivia", f"/manage/tasks/{board.id}/close/", "close"),
        ("olivia", "/manage/approvals/", "approvals"), ("olivia", f"/submissions/{w['queued'].id}/", "submission-owner"),
        ("olivia", "/manage/ledger/", "ledger"), ("olivia", "/manage/sites/", "sites"),
    ]  # fmt: skip


def _audit(page, axe_js) -> list[str]:
    page.add_script_tag(content=axe_js)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]  # fmt: skip


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_type_fits_the_viewport_and_passes_axe(world, person, axe_js, width):
    pages: dict[str | None, object] = {}
    problems = []
    for who, path, name in _page_types(world):
        page = pages.get(who) or pages.setdefault(who, person(who, width))
        response = page.goto(path)
        assert response.status < 400, (path, response.status)
        page.wait_for_load_state("load")
        viewport = WIDTHS[width][0]
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if scroll_width > viewport:
            wide = page.evaluate(
                """(v) => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > v + 0.5)
                     .slice(-4).map(e => e.outerHTML.slice(0, 90))""", viewport)  # fmt: skip
            problems.append(f"{name} at {width}: the page is {scroll_width} px wide in a {viewport} px viewport: {wide}")
        unreachable = page.evaluate(
            """() => [...document.querySelectorAll('.table-wrap')]
                 .filter(w => w.scrollWidth > w.clientWidth)
                 .filter(w => w.getAttribute('tabindex') !== '0' || w.getAttribute('role') !== 'region' || !w.getAttribute('aria-label'))
                 .map(w => w.outerHTML.slice(0, 80))"""
        )
        if unreachable:
            problems.append(f"{name} at {width}: scrolling tables without a tab stop and a name: {unreachable}")
        problems += [f"{name} at {width}: {v}" for v in _audit(page, axe_js)]
        if name in ("task", "approvals", "submission-vendor", "my-submissions", "task-form", "close", "board-all"):
            screenshot(page, f"{name}-{width}")
    assert not problems, "\n".join(problems)


def test_phone_leaderboard_shows_scores_inside_the_table_box(world, person):
    page = person(None, "phone")
    page.goto(f"/tasks/{world['board'].id}/")
    first_score = page.locator("#leaderboard-live tbody tr").first.locator("td.num").nth(1)
    expect(first_score).to_have_text(re.compile(r"0\.\d{4}"))
    box = first_score.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    # Screen-reader text stays inside the table's scroll box (it escaped it before, widening the page).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    escaped = page.evaluate(
        """() => [...document.querySelectorAll('.table-wrap .visually-hidden')]
             .filter(e => { const box = e.closest('.table-wrap'), r = e.getBoundingClientRect(), w = box.getBoundingClientRect();
                            return r.right > w.left + box.scrollWidth + 1 || r.left < w.left - 1; }).length"""
    )
    assert escaped == 0
    # The table box is a tab stop: the keyboard reaches (and scrolls) it.
    region = page.get_by_role("region", name=re.compile("Leaderboard"))
    region.focus()
    assert page.evaluate("document.activeElement.classList.contains('table-wrap')")


@pytest.mark.parametrize("width", list(WIDTHS))
def test_vendor_goes_from_the_task_page_to_its_own_score(world, person, width, tmp_path):
    from marketplace.submissions.models import Submission
    from tests.portal.helpers import score

    ruled = world["ruled"]
    page = person("victor", width)
    page.goto(f"/tasks/{ruled.id}/")
    onboarding = page.locator("[data-onboarding]")
    expect(onboarding.get_by_role("link", name="model contract")).to_be_visible()
    with page.expect_download() as kit:
        onboarding.get_by_role("link", name="starter kit").click()
    assert kit.value.suggested_filename.endswith("starter-kit.zip")
    expect(page.locator("[data-rules]")).to_contain_text("No external data")
    page.get_by_role("button", name="Accept the rules for Acme Models").click()
    expect(page.locator("[data-rules-accepted]")).to_be_visible()
    page.get_by_role("link", name="Upload a model").click()
    model = tmp_path / "model.joblib"
    model.write_bytes(sklearn_like_artifact().getvalue())
    page.get_by_label("Model name").fill(f"logreg-{width}")
    page.get_by_label("Format").select_option("sklearn")
    page.get_by_label("Model file").set_input_files(str(model))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/submissions/")
    row = page.locator("tr", has_text=f"logreg-{width}")
    status = row.locator("[data-status]")
    expect(status).to_have_text("Pending")
    box = status.bounding_box()
    assert box and box["x"] + box["width"] <= WIDTHS[width][0], box  # on screen, no sideways scrolling
    screenshot(page, f"vendor-pending-{width}")
    # The site releases; the release time passes: the vendor sees its score on its submission page.
    submission = Submission.objects.get(name=f"logreg-{width}")
    from marketplace.submissions.services import submission_check

    submission_check(submission_id=submission.id)
    score(world["sites"][0], submission, {"roc_auc": 0.91, "accuracy": 0.85})
    page.reload()
    expect(row.locator("[data-scores]")).to_contain_text("roc_auc 0.9100")
    row.get_by_role("link", name=f"logreg-{width}").click()
    expect(page.locator("[data-scores]")).to_contain_text("0.9100")
    expect(page.get_by_role("button", name="Nominate as final")).to_be_visible()
    screenshot(page, f"vendor-submission-{width}")


@pytest.mark.parametrize("width", list(WIDTHS))
def test_owner_goes_from_a_new_task_to_a_closed_one_with_a_bulk_approved_queue(world, person, width):
    from tests.portal.helpers import upload_model

    page = person("olivia", width)
    page.goto("/manage/tasks/new/")
    page.get_by_label("Title").fill(f"Readmission {width}")
    page.get_by_label("Number of features").fill("30")
    page.get_by_label("roc_auc", exact=True).check()
    page.get_by_label("Primary metric (ranks the leaderboard)").select_option("roc_auc")
    page.get_by_label("Every job waits for my approval").check()
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("[data-task-status]")).to_have_text("Draft")
    task_id = int(re.search(r"/manage/tasks/(\d+)/", page.url).group(1))
    from marketplace.catalog.models import Task

    task = Task.objects.get(id=task_id)
    for site in world["sites"]:
        register_shard(site, task)
    page.reload()
    page.get_by_role("button", name="Open for submissions").click()
    expect(page.locator("[data-task-status]")).to_have_text("Open")
    task.refresh_from_db()
    assert task.requires_job_approval
    for i, persona in enumerate([world["vendor"], world["other"], world["vendor"]]):
        upload_model(persona, task, name=f"model-{i}")
    # Six jobs (3 models x 2 sites): one click approves them all.
    page.goto(f"/manage/approvals/?task={task_id}")
    page.get_by_role("button", name="Approve all 6 matching").click()
    expect(page.get_by_text("6 jobs approved")).to_be_visible()
    screenshot(page, f"owner-bulk-approved-{width}")
    page.goto(f"/manage/tasks/{task_id}/")
    page.get_by_role("link", name="Close the task…").click()
    expect(page.locator("[data-close-summary]")).to_contain_text("3 from 2 vendors")
    page.get_by_role("button", name="Close the task").click()
    expect(page.locator("[data-task-status]")).to_have_text("Closed")


def test_the_live_board_keeps_the_page_while_nothing_changes_and_updates_when_it_does(world, person):
    """htmx polls every 5 s with ?since=<version>: 204 (no swap, no body) while the board is the
    same; the new table once a score is released."""
    from tests.portal.helpers import score, upload_model

    page = person(None, "desktop")
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if "/leaderboard/" in r.url else None)
    page.goto(f"/tasks/{world['board'].id}/")
    page.evaluate("document.getElementById('leaderboard-live').dataset.marker = 'first'")
    page.wait_for_timeout(6_000)
    assert 204 in statuses and 200 not in statuses
    assert page.evaluate("document.getElementById('leaderboard-live').dataset.marker") == "first"
    newer = upload_model(world["other"], world["board"], name="a-new-best")
    for site in world["sites"]:
        score(site, newer, {"roc_auc": 0.99, "log_loss": 0.05})
    expect(page.locator("#leaderboard-live tbody tr").first).to_contain_text("a-new-best", timeout=15_000)
    assert page.evaluate("document.getElementById('leaderboard-live').dataset.marker") is None
