"""The whole story in a real browser, with real site agents running real sandboxes:
an owner publishes a task with its privacy policy, a vendor asks for access, the owner approves,
the vendor reads its privacy budget and uploads a model, 'my submissions' shows it pending until
its release time and then its (differentially private) scores, the leaderboard shows it, the owner
reads the ledger in (epsilon, delta), exports it as CSV, and closes the task through its
confirmation page. Screenshots of the main pages go to docs/screenshots/.
"""

import csv
import io
import re
import sys

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, screenshot
from tests.conftest import _persona

pytestmark = [
    pytest.mark.browser,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

SITES = ["north", "south"]


def _test_rows():
    sys.path.insert(0, str(ROOT / "docs" / "examples"))
    from _common import load_split

    _, _, features, labels = load_split()
    return features, labels


def test_owner_publishes_vendor_uploads_sites_score_owner_audits(new_page, agents, vendor_model, live_server):
    _persona("olivia", "St. Mercy Hospitals", "data_owner")
    owner = new_page()

    # The owner logs in, creates two sites (each token shown once) and a task.
    owner.goto("/accounts/login/")
    owner.get_by_label("Username").fill("olivia")
    owner.get_by_label("Password").fill("correct-horse-battery")
    owner.get_by_role("button", name="Log in").click()
    expect(owner.get_by_role("link", name="Manage")).to_be_visible()
    configs = []
    for name in SITES:
        owner.goto("/manage/sites/")
        owner.get_by_label("Site name").fill(name)
        owner.get_by_role("button", name="Create site").click()
        token = owner.get_by_label("Site token").input_value()
        assert token.startswith("vbs_")
        configs.append(agents.configure(name, token))

    owner.goto("/manage/tasks/new/")
    owner.get_by_label("Title").fill("Breast cancer screening")
    owner.get_by_label("Description").fill(
        "Malignant or benign from 30 features; the rows stay at two hospitals."
    )
    owner.get_by_label("Visibility").select_option("invite_only")
    owner.get_by_label("Number of features").fill("30")
    owner.get_by_label("roc_auc", exact=True).check()
    owner.get_by_label("accuracy", exact=True).check()
    owner.get_by_label("Decimals shown for accuracy").fill("3")
    owner.get_by_label("Primary metric (ranks the leaderboard)").select_option("roc_auc")
    owner.get_by_label("Minimum test rows per site").fill("20")
    owner.get_by_label("Sandbox timeout (seconds)").fill("120")
    owner.get_by_label("Release delay (seconds)").fill("20")
    expect(owner.get_by_label("Epsilon (ε) per release")).to_have_value("1.0")
    screenshot(owner, "owner-task-form")
    owner.get_by_role("button", name="Save draft").click()
    expect(owner.locator("[data-task-status]")).to_have_text("Draft")
    task_id = int(re.search(r"/manage/tasks/(\d+)/", owner.url).group(1))

    # Each site registers its private shard (metadata goes to the hub) and starts its agent.
    features, labels = _test_rows()
    half = len(labels) // 2
    for config, rows in zip(configs, (slice(0, half), slice(half, None)), strict=True):
        agents.register(config, task_id, features[rows], labels[rows])
        agents.start(config)
    owner.reload()
    expect(owner.get_by_role("cell", name="57", exact=True)).to_have_count(2)
    owner.get_by_role("button", name="Open for submissions").click()
    expect(owner.locator("[data-task-status]")).to_have_text("Open")
    owner.goto("/manage/sites/")
    expect(owner.locator("#sites-live").get_by_text("Online")).to_have_count(
        2, timeout=30_000
    )  # live heartbeats
    screenshot(owner, "owner-sites")

    # A vendor signs up and asks for access to the invite-only task.
    vendor = new_page()
    vendor.goto("/accounts/signup/")
    vendor.get_by_label("Username").fill("victor")
    vendor.get_by_label("E-mail address").fill("victor@example.org")
    vendor.locator("#id_password1").fill("a-long-unusual-passphrase")
    vendor.get_by_label("Password again").fill("a-long-unusual-passphrase")
    vendor.get_by_label("I sign up for").select_option("vendor")
    vendor.get_by_label("Organization name").fill("Acme Models")
    screenshot(vendor, "signup")
    vendor.get_by_role("button", name="Create my account").click()
    expect(vendor.get_by_role("link", name="Acme Models")).to_be_visible()
    vendor.goto("/")
    vendor.get_by_role("link", name="Breast cancer screening").click()
    expect(vendor.get_by_text("visible to its approved vendors")).to_be_visible()
    vendor.get_by_label(re.compile("Note to the data owner")).fill("We build screening models.")
    vendor.get_by_role("button", name="Request access for Acme Models").click()
    expect(vendor.get_by_text("Access requested", exact=True)).to_be_visible()

    # The owner approves it in the approval queue.
    owner.goto("/manage/approvals/")
    expect(owner.get_by_text("We build screening models.")).to_be_visible()
    screenshot(owner, "owner-approvals")
    owner.get_by_role("button", name="Approve Acme Models for Breast cancer screening").click()
    expect(owner.get_by_text("No access request waits for you.")).to_be_visible()

    # The vendor reads its privacy budget, then uploads a model; the browser checks the file first,
    # then shows the upload's progress.
    vendor.reload()
    budget = vendor.locator("[data-privacy-budget]")
    expect(budget).to_contain_text("ε = 0.00 spent of 10")
    left = int(budget.locator("[data-submissions-left]").inner_text().split()[0])
    expect(vendor.locator("[data-privacy-policy]")).to_contain_text("ε = 1, δ = 1e-06 per submission")
    vendor.get_by_role("link", name="Upload a model").click()
    expect(vendor.locator("[data-privacy-budget]")).to_contain_text(f"{left} more uploads")
    vendor.get_by_label("Model name").fill("Logistic regression")
    vendor.get_by_label("Format").select_option("onnx")
    vendor.get_by_label("Model file").set_input_files(str(vendor_model))
    assert "usually a .onnx file" in vendor.get_by_label("Model file").evaluate("e => e.validationMessage")
    vendor.get_by_label("Format").select_option("sklearn")
    vendor.get_by_label("Model file").set_input_files(str(vendor_model))
    assert vendor.get_by_label("Model file").evaluate("e => e.validity.valid")
    vendor.get_by_label("Description").fill("Standardized features, L2 logistic regression.")
    vendor.get_by_role("button", name="Upload").click()
    vendor.wait_for_url("**/submissions/")

    # 'My submissions' shows it pending, with no site's progress, until its release time (upload + a
    # multiple of 20 s), then its scores, live (htmx polling): no reload happens meanwhile.
    vendor.evaluate("window.__stayed = true")
    row = vendor.locator("tr", has_text="Logistic regression")
    expect(row.locator("[data-status]")).to_have_text("Pending")
    expect(row.locator("[data-pending-until]")).to_contain_text("until ~")
    screenshot(vendor, "vendor-submissions-pending")
    try:
        expect(row.locator("[data-status]")).to_have_text("Scored", timeout=150_000)
    except AssertionError:
        print(agents.logs())
        raise
    expect(row.locator("[data-scores]")).to_contain_text(re.compile(r"roc_auc 0\.\d{4}"))
    for name in SITES:
        expect(row).not_to_contain_text(name)
    assert vendor.evaluate("window.__stayed === true")
    expect(vendor.locator("[data-quota-today]")).to_have_text("4 of 5")
    expect(vendor.locator("[data-privacy-left]")).to_contain_text(f"{left - 1} upload")
    screenshot(vendor, "vendor-submissions")

    # The leaderboard shows it, with the policy's decimals and the best-score chart.
    vendor.goto(f"/tasks/{task_id}/")
    board = vendor.locator("#leaderboard-live")
    expect(board.locator("tbody tr", has_text="Logistic regression")).to_contain_text("Acme Models")
    expect(board.locator("tbody tr").first).to_contain_text(re.compile(r"0\.\d{4}"))
    expect(board.locator("svg[role=img]")).to_be_visible()
    screenshot(vendor, "task-leaderboard")
    vendor.goto("/")
    screenshot(vendor, "home")

    # The owner reads the egress ledger of one site and exports the ledger as CSV.
    owner.goto("/manage/ledger/")
    expect(owner.locator("[data-ledger-row]")).to_have_count(2)
    owner.get_by_label("Site").select_option(label="north")
    owner.get_by_role("button", name="Filter").click()
    expect(owner.locator("[data-ledger-row]")).to_have_count(1)
    owner.get_by_label("Site").select_option(label="All sites")
    owner.get_by_role("button", name="Filter").click()
    screenshot(owner, "owner-ledger")
    with owner.expect_download() as download:
        owner.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert {r["site"] for r in rows} == set(SITES)
    assert {r["vendor"] for r in rows} == {"Acme Models"} and {r["kind"] for r in rows} == {"metrics"}
    assert all(len(r["sha256"]) == 64 and int(r["bytes"]) > 0 for r in rows)
    # One figure everywhere: each site's release cost epsilon 1 at delta 1e-6, as the task says.
    assert all(float(r["epsilon"]) == 1.0 and float(r["delta"]) == 1e-6 and float(r["rho"]) > 0 for r in rows)
    owner.get_by_label("Task").select_option(label="Breast cancer screening")
    owner.get_by_role("button", name="Filter").click()
    expect(owner.locator("[data-leakage-row] [data-epsilon-public]")).to_have_text("1.000")

    # The owner closes the task through its confirmation page (no private split: nothing to reveal).
    owner.goto(f"/manage/tasks/{task_id}/")
    owner.get_by_role("link", name="Close the task…").click()
    expect(owner.get_by_text("nothing more is revealed")).to_be_visible()
    screenshot(owner, "owner-close")
    owner.get_by_role("button", name="Close the task").click()
    expect(owner.locator("[data-task-status]")).to_have_text("Closed")
