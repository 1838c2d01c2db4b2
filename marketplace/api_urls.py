from django.urls import path

from marketplace.accounts import apis as accounts
from marketplace.catalog import apis as catalog
from marketplace.egress import apis as egress
from marketplace.finetuning import agent_apis as fl_agent
from marketplace.finetuning import apis as finetuning
from marketplace.jobs import agent_apis as agent
from marketplace.jobs import apis as jobs
from marketplace.leaderboard import apis as leaderboard
from marketplace.sites import apis as sites
from marketplace.submissions import apis as submissions

urlpatterns = [
    path("me", accounts.MeApi.as_view(), name="me"),
    path("tokens", accounts.TokenListCreateApi.as_view(), name="tokens"),
    path("tokens/<int:token_id>/revoke", accounts.TokenRevokeApi.as_view(), name="token-revoke"),
    path("organizations", accounts.OrganizationListCreateApi.as_view(), name="organizations"),
    path("organizations/<int:organization_id>", accounts.OrganizationDetailApi.as_view(), name="organization"),
    path("organizations/<int:organization_id>/members", accounts.MemberAddApi.as_view(), name="organization-members"),
    path("sites", sites.SiteListCreateApi.as_view(), name="sites"),
    path("sites/<int:site_id>", sites.SiteDetailApi.as_view(), name="site"),
    path("sites/<int:site_id>/tokens", sites.SiteTokenListCreateApi.as_view(), name="site-tokens"),
    path("sites/<int:site_id>/tokens/<int:token_id>/revoke", sites.SiteTokenRevokeApi.as_view(), name="site-token-revoke"),
    path("tasks", catalog.TaskListCreateApi.as_view(), name="tasks"),
    path("tasks/<int:task_id>", catalog.TaskDetailApi.as_view(), name="task"),
    path("tasks/<int:task_id>/open", catalog.TaskOpenApi.as_view(), name="task-open"),
    path("tasks/<int:task_id>/close", catalog.TaskCloseApi.as_view(), name="task-close"),
    path("tasks/<int:task_id>/close-plan", catalog.TaskClosePlanApi.as_view(), name="task-close-plan"),
    path("tasks/<int:task_id>/sample", catalog.TaskSampleApi.as_view(), name="task-sample"),
    path("tasks/<int:task_id>/shards", catalog.TaskShardListApi.as_view(), name="task-shards"),
    path("tasks/<int:task_id>/access-requests", catalog.AccessRequestListCreateApi.as_view(), name="task-access-requests"),
    path("tasks/<int:task_id>/access-requests/<int:vendor_id>/approve", catalog.AccessApproveApi.as_view(), name="task-access-approve"),
    path("tasks/<int:task_id>/access-requests/<int:vendor_id>/reject", catalog.AccessRejectApi.as_view(), name="task-access-reject"),
    path("tasks/<int:task_id>/quota", submissions.TaskQuotaApi.as_view(), name="task-quota"),
    path("tasks/<int:task_id>/rules/accept", submissions.RulesAcceptApi.as_view(), name="task-rules-accept"),
    path("tasks/<int:task_id>/leakage", egress.TaskLeakageApi.as_view(), name="task-leakage"),
    path("tasks/<int:task_id>/leaderboard", leaderboard.LeaderboardApi.as_view(), name="task-leaderboard"),
    path("submissions", submissions.SubmissionListCreateApi.as_view(), name="submissions"),
    path("submissions/<int:submission_id>", submissions.SubmissionDetailApi.as_view(), name="submission"),
    path("submissions/<int:submission_id>/nominate", submissions.SubmissionNominateApi.as_view(), name="submission-nominate"),
    path("submissions/<int:submission_id>/unnominate", submissions.SubmissionUnnominateApi.as_view(), name="submission-unnominate"),
    path("submissions/<int:submission_id>/artifact", submissions.SubmissionArtifactApi.as_view(), name="submission-artifact"),
    path("jobs", jobs.JobListApi.as_view(), name="jobs"),
    path("jobs/<int:job_id>", jobs.JobDetailApi.as_view(), name="job"),
    path("jobs/<int:job_id>/approve", jobs.JobApproveApi.as_view(), name="job-approve"),
    path("jobs/<int:job_id>/reject", jobs.JobRejectApi.as_view(), name="job-reject"),
    path("jobs/<int:job_id>/release", jobs.JobReleaseApi.as_view(), name="job-release"),
    path("jobs/<int:job_id>/withhold", jobs.JobWithholdApi.as_view(), name="job-withhold"),
    path("egress", egress.EgressListApi.as_view(), name="egress"),
    path("egress.csv", egress.EgressCsvApi.as_view(), name="egress-csv"),
    path("agent/heartbeat", agent.HeartbeatApi.as_view(), name="agent-heartbeat"),
    path("agent/shards", agent.ShardRegisterApi.as_view(), name="agent-shards"),
    path("agent/tasks/<int:task_id>", agent.SiteTaskApi.as_view(), name="agent-task"),
    path("agent/jobs/claim", agent.JobClaimApi.as_view(), name="agent-claim"),
    path("agent/jobs/<int:job_id>/lease", agent.LeaseRenewApi.as_view(), name="agent-lease"),
    path("agent/jobs/<int:job_id>/artifact", agent.ArtifactDownloadApi.as_view(), name="agent-artifact"),
    path("agent/jobs/<int:job_id>/result", agent.ResultApi.as_view(), name="agent-result"),
    path("agent/jobs/<int:job_id>/failure", agent.FailureApi.as_view(), name="agent-failure"),
    path("agent/jobs/<int:job_id>/hold", agent.HoldApi.as_view(), name="agent-hold"),
    path("agent/jobs/<int:job_id>/private-result", agent.PrivateResultApi.as_view(), name="agent-private-result"),
    path("agent/pending", agent.PendingWorkApi.as_view(), name="agent-pending"),
    path("agent/receipts", agent.ReceiptsApi.as_view(), name="agent-receipts"),
    path("agent/jobs/<int:job_id>/weights-offset", agent.WeightsOffsetDownloadApi.as_view(), name="agent-weights-offset"),
    path("finetuning-runs", finetuning.RunListCreateApi.as_view(), name="finetuning-runs"),
    path("finetuning-runs/<int:run_id>", finetuning.RunDetailApi.as_view(), name="finetuning-run"),
    path("finetuning-runs/<int:run_id>/approve", finetuning.RunApproveApi.as_view(), name="finetuning-run-approve"),
    path("finetuning-runs/<int:run_id>/reject", finetuning.RunRejectApi.as_view(), name="finetuning-run-reject"),
    path("finetuning-runs/<int:run_id>/stop", finetuning.RunStopApi.as_view(), name="finetuning-run-stop"),
    path("finetuning-runs/<int:run_id>/model", finetuning.RunModelApi.as_view(), name="finetuning-run-model"),
    path("agent/runs/<int:run_id>/state", fl_agent.RunStateApi.as_view(), name="agent-run-state"),
    path("agent/runs/<int:run_id>/layout", fl_agent.RunLayoutApi.as_view(), name="agent-run-layout"),
    path("agent/runs/<int:run_id>/rounds/<int:round_number>/offset", fl_agent.RunOffsetApi.as_view(), name="agent-run-offset"),
    path("agent/runs/<int:run_id>/rounds/<int:round_number>/keys", fl_agent.RunKeysApi.as_view(), name="agent-run-keys"),
    path("agent/runs/<int:run_id>/rounds/<int:round_number>/shares", fl_agent.RunSharesApi.as_view(), name="agent-run-shares"),
    path("agent/runs/<int:run_id>/rounds/<int:round_number>/masked", fl_agent.RunMaskedApi.as_view(), name="agent-run-masked"),
    path("agent/runs/<int:run_id>/rounds/<int:round_number>/unmask", fl_agent.RunUnmaskApi.as_view(), name="agent-run-unmask"),
    path("agent/runs/<int:run_id>/rounds/<int:round_number>/update", fl_agent.RunUpdateApi.as_view(), name="agent-run-update"),
]
