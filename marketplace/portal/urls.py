from django.urls import path, register_converter

from marketplace.portal.views import (
    accounts,
    approvals,
    finetuning,
    onboarding,
    owners,
    public,
    submission,
    vendors,
)


class _Words:
    """A path part limited to a few words, so that a typo is a 404 rather than a wrong action."""

    words: tuple[str, ...] = ()

    @property
    def regex(self) -> str:
        return "|".join(self.words)

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class TaskAction(_Words):
    words = ("open",)


class Decision(_Words):
    words = ("approve", "reject")


class ReleaseDecision(_Words):
    words = ("release", "withhold")


class BoardFormat(_Words):
    words = ("csv", "json")


class Nomination(_Words):
    words = ("nominate", "unnominate")


register_converter(TaskAction, "task_action")
register_converter(Decision, "decision")
register_converter(ReleaseDecision, "release_decision")
register_converter(Nomination, "nomination")
register_converter(BoardFormat, "board_format")

app_name = "portal"

urlpatterns = [
    # Everyone
    path("", public.home, name="home"),
    path("tasks/<int:task_id>/", public.task_detail, name="task"),
    path("tasks/<int:task_id>/leaderboard/", public.task_leaderboard, name="task-leaderboard"),
    path("tasks/<int:task_id>/leaderboard.<board_format:fmt>", public.task_leaderboard_download, name="task-leaderboard-download"),
    path("how-scores-are-computed/", public.scoring, name="scoring"),
    path("model-contract/", onboarding.model_contract, name="model-contract"),
    path("tasks/<int:task_id>/starter-kit.zip", onboarding.starter_kit, name="starter-kit"),
    path("tasks/<int:task_id>/rules/accept/", onboarding.task_rules_accept, name="rules-accept"),
    # Accounts
    path("accounts/signup/", accounts.sign_up, name="signup"),
    path("account/", accounts.account, name="account"),
    path("account/tokens/", accounts.tokens, name="tokens"),
    path("account/tokens/<int:token_id>/revoke/", accounts.token_revoke, name="token-revoke"),
    path("organizations/<int:organization_id>/", accounts.organization_detail, name="organization"),
    path("account/email/", accounts.account_email, name="account-email"),
    path("account/notifications/", accounts.account_notifications, name="account-notifications"),
    path("account/invitations/<int:invitation_id>/accept/", accounts.invitation_answer, {"answer": "accept"}, name="invitation-accept"),
    path("account/invitations/<int:invitation_id>/decline/", accounts.invitation_answer, {"answer": "decline"}, name="invitation-decline"),
    path("invitations/<str:key>/", accounts.invitation_by_link, name="invitation"),
    path("organizations/<int:organization_id>/leave/", accounts.organization_leave, name="organization-leave"),
    path("organizations/<int:organization_id>/members/<str:username>/role/", accounts.member_role, name="member-role"),
    path("organizations/<int:organization_id>/invitations/<int:invitation_id>/revoke/", accounts.organization_invitation_revoke, name="invitation-revoke"),
    path("organizations/<int:organization_id>/webhooks/", accounts.organization_webhooks, name="webhooks"),
    path("organizations/<int:organization_id>/webhooks/<int:webhook_id>/delete/", accounts.organization_webhook_delete, name="webhook-delete"),
    # Vendors
    path("tasks/<int:task_id>/request-access/", vendors.access_request, name="access-request"),
    path("tasks/<int:task_id>/submit/", vendors.submission_new, name="submit"),
    path("submissions/", vendors.submissions, name="submissions"),
    path("submissions/status/", vendors.submissions_status, name="submissions-status"),
    path("submissions/<int:submission_id>/", submission.submission_detail, name="submission"),
    path(
        "submissions/<int:submission_id>/<nomination:action>/", vendors.submission_nomination, name="nominate"
    ),
    path("submissions/<int:submission_id>/fine-tune/", finetuning.finetune_new, name="finetune"),
    path("fine-tuning/", finetuning.runs, name="runs"),
    path("fine-tuning/<int:run_id>/", finetuning.run_detail, name="run"),
    path("fine-tuning/<int:run_id>/status/", finetuning.run_status, name="run-status"),
    path("fine-tuning/<int:run_id>/stop/", finetuning.run_stop_vendor, name="run-stop"),
    # Data owners
    path("manage/", owners.dashboard, name="manage"),
    path("manage/tasks/new/", owners.task_new, name="task-new"),
    path("manage/tasks/<int:task_id>/", owners.task_manage, name="manage-task"),
    path("manage/tasks/<int:task_id>/edit/", owners.task_edit, name="task-edit"),
    path("manage/tasks/<int:task_id>/close/", owners.task_close_confirm, name="task-close"),
    path("manage/tasks/<int:task_id>/<task_action:action>/", owners.task_state, name="task-state"),
    path("manage/sites/", owners.sites, name="sites"),
    path("manage/sites/status/", owners.sites_status, name="sites-status"),
    path("manage/sites/<int:site_id>/", owners.site_detail, name="site"),
    path("manage/approvals/", approvals.approvals, name="approvals"),
    path("manage/approvals/jobs/bulk/", approvals.jobs_bulk, name="jobs-bulk"),
    path("manage/approvals/results/bulk/", approvals.results_bulk, name="results-bulk"),
    path(
        "manage/approvals/tasks/<int:task_id>/vendors/<int:vendor_id>/<decision:decision>/",
        owners.access_decide,
        name="access-decide",
    ),
    path("manage/approvals/jobs/<int:job_id>/<decision:decision>/", owners.job_decision, name="job-decide"),
    path(
        "manage/approvals/results/<int:job_id>/<release_decision:decision>/",
        owners.result_release,
        name="result-release",
    ),
    path(
        "manage/approvals/runs/<int:run_id>/<decision:decision>/", finetuning.run_decision, name="run-decide"
    ),
    path("manage/fine-tuning/", finetuning.owner_runs, name="manage-runs"),
    path("manage/fine-tuning/<int:run_id>/", finetuning.owner_run_detail, name="manage-run"),
    path("manage/fine-tuning/<int:run_id>/status/", finetuning.owner_run_status, name="manage-run-status"),
    path("manage/fine-tuning/<int:run_id>/stop/", finetuning.run_stop_owner, name="manage-run-stop"),
    path("manage/ledger/", owners.ledger, name="ledger"),
    path("manage/ledger.csv", owners.ledger_csv, name="ledger-csv"),
]
