"""Portal forms parse and present input only; every rule is checked again by the services."""

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import UsernameField

from marketplace.accounts.models import MemberRole, OrganizationKind
from marketplace.catalog.metric_catalog import METRICS
from marketplace.catalog.models import DEFAULT_RELEASE_DELAY_SECONDS, LeaderboardMode, TaskType, Visibility
from marketplace.catalog.specs import (
    MAX_CPUS,
    MAX_DECIMALS,
    MAX_MEMORY_MB,
    MAX_OUTPUT_MB,
    MAX_TIMEOUT_SECONDS,
)
from marketplace.egress.models import EgressKind
from marketplace.finetuning.models import RobustRule, StrategyName
from marketplace.submissions.models import ArtifactFormat

# What the browser offers in the file picker for each format (the hub checks the bytes anyway).
FORMAT_EXTENSIONS = {
    ArtifactFormat.SKLEARN: [".joblib", ".pkl"],
    ArtifactFormat.TORCHSCRIPT: [".pt", ".pth", ".zip"],
    ArtifactFormat.ONNX: [".onnx"],
    ArtifactFormat.PYTHON_PACKAGE: [".zip", ".tar.gz", ".tgz", ".tar"],
}

NO_ORGANIZATION = ""
SIGN_UP_KINDS = [
    (NO_ORGANIZATION, "No organization yet (I will accept an invitation)"),
    *OrganizationKind.choices,
]


class SignUpForm(forms.Form):
    username = UsernameField(max_length=150, widget=forms.TextInput(attrs={"autocomplete": "username"}))
    email = forms.EmailField(
        label="E-mail address", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}),
        help_text="For password resets, invitations and the notifications you choose.",
    )  # fmt: skip
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    kind = forms.ChoiceField(label="I sign up for", choices=SIGN_UP_KINDS, required=False, initial="vendor")
    organization_name = forms.CharField(
        label="Organization name", max_length=120, required=False,
        help_text="Creates the organization with you as its admin.",
    )  # fmt: skip

    def clean(self):
        data = super().clean()
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        elif data.get("password1"):
            try:
                password_validation.validate_password(data["password1"], get_user_model()(
                    username=data.get("username", ""), email=data.get("email", "")
                ))  # fmt: skip
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        if data.get("kind") and not data.get("organization_name"):
            self.add_error("organization_name", "Name the organization you create.")
        if data.get("organization_name") and not data.get("kind"):
            self.add_error("kind", "Say whether the organization is a data owner or a vendor.")
        return data


class OrganizationForm(forms.Form):
    name = forms.CharField(label="Organization name", max_length=120)
    kind = forms.ChoiceField(label="Kind", choices=OrganizationKind.choices)


class InviteForm(forms.Form):
    """An admin invites a person; they join only if they accept."""

    invitee = forms.CharField(
        label="Username or e-mail address", max_length=254,
        help_text="A username invites an existing account; an e-mail address gets a link to sign up or log in.",
    )  # fmt: skip
    role = forms.ChoiceField(choices=MemberRole.choices, initial=MemberRole.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=MemberRole.choices)


class EmailForm(forms.Form):
    email = forms.EmailField(
        label="E-mail address", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )


class NotificationPreferencesForm(forms.Form):
    email_events = forms.MultipleChoiceField(
        label="E-mail me when", required=False, widget=forms.CheckboxSelectMultiple, choices=[]
    )

    def __init__(self, *args, **kwargs):
        from marketplace.notifications.models import Event

        super().__init__(*args, **kwargs)
        self.fields["email_events"].choices = Event.choices


class WebhookForm(forms.Form):
    url = forms.URLField(
        label="Receiver URL", max_length=500, assume_scheme="https",
        help_text="Each delivery is a JSON POST signed with HMAC-SHA256 (see docs/notifications.md).",
    )  # fmt: skip
    events = forms.MultipleChoiceField(label="Events", widget=forms.CheckboxSelectMultiple, choices=[])

    def __init__(self, *args, **kwargs):
        from marketplace.notifications.models import Event

        super().__init__(*args, **kwargs)
        self.fields["events"].choices = Event.choices


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        label="Token name", max_length=80, help_text="What the token is for, e.g. 'CI uploads'."
    )


class SiteCreateForm(forms.Form):
    name = forms.CharField(label="Site name", max_length=120)
    organization = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Organization")

    def __init__(self, *args, organizations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].choices = [(o.id, o.name) for o in organizations]


class AccessRequestForm(forms.Form):
    note = forms.CharField(
        label="Note to the data owner",
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class SubmissionForm(forms.Form):
    name = forms.CharField(label="Model name", max_length=120)
    artifact_format = forms.ChoiceField(label="Format", choices=ArtifactFormat.choices)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    artifact = forms.FileField(label="Model file", allow_empty_file=False)
    organization = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, label="Vendor organization"
    )

    def __init__(self, *args, organizations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["organization"].choices = [(o.id, o.name) for o in organizations]
        self.max_bytes = settings.VAULTBENCH_MAX_ARTIFACT_BYTES
        self.fields["artifact"].widget.attrs.update(
            {
                "data-max-bytes": str(self.max_bytes),
                "accept": ",".join(sorted({e for v in FORMAT_EXTENSIONS.values() for e in v})),
            }
        )
        self.fields["artifact"].help_text = f"At most {self.max_bytes // (1024 * 1024)} MB."

    def clean_artifact(self):
        artifact = self.cleaned_data["artifact"]
        if artifact.size > self.max_bytes:
            raise forms.ValidationError(f"The file is larger than the {self.max_bytes} bytes allowed.")
        return artifact


DP_FIELDS = ["dp_epsilon_per_release", "dp_delta", "dp_vendor_epsilon", "dp_task_epsilon", "release_delay_seconds",
             "ladder_threshold"]  # fmt: skip
FL_FIELDS = ["fl_privacy_unit", "fl_example_clip_norm", "fl_clip_norm", "fl_noise_multiplier", "fl_dp_delta",
             "fl_epsilon_cap", "fl_secure_aggregation", "fl_robust_rule", "fl_quantization_bits"]  # fmt: skip


def _datetime_field(label: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label, required=False, input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )  # fmt: skip


class TaskForm(forms.Form):
    """Every field of a task and its policy. Structural fields are disabled once the task opened."""

    title = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5}))
    rules = forms.CharField(
        required=False, max_length=20000, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Optional. Shown on the task page and in the starter kit; each vendor accepts them before its "
        "first upload (and again after you change them).",
    )
    task_type = forms.ChoiceField(label="Task type", choices=TaskType.choices)
    n_features = forms.IntegerField(label="Number of features", min_value=1, max_value=100_000)
    dtype = forms.ChoiceField(label="Feature dtype", choices=[("float32", "float32"), ("float64", "float64")])
    n_classes = forms.IntegerField(
        label="Number of classes", required=False, min_value=2, max_value=10_000,
        help_text="Classification only (2 for binary).",
    )  # fmt: skip
    target_min = forms.FloatField(
        label="Lowest target value", required=False,
        help_text="Regression only: the range [lowest, highest] of the target. Errors are clipped to it, which "
        "bounds what one row can change (the noise is calibrated to it); a failed model scores its middle.",
    )  # fmt: skip
    target_max = forms.FloatField(label="Highest target value", required=False, help_text="Regression only.")
    primary_metric = forms.ChoiceField(
        label="Primary metric (ranks the leaderboard)", choices=[(m, m) for m in METRICS]
    )
    visibility = forms.ChoiceField(choices=Visibility.choices)
    opens_at = _datetime_field("Opens at (UTC)")
    closes_at = _datetime_field("Closes at (UTC)")
    quota_per_day = forms.IntegerField(label="Submissions per vendor per day", min_value=1, initial=5)
    quota_total = forms.IntegerField(label="Submissions per vendor in total", required=False, min_value=1)
    memory_mb = forms.IntegerField(
        label="Sandbox memory (MB)", min_value=64, max_value=MAX_MEMORY_MB, initial=1024
    )
    cpus = forms.FloatField(label="Sandbox CPUs", min_value=0.1, max_value=MAX_CPUS, initial=1.0)
    timeout_seconds = forms.IntegerField(
        label="Sandbox timeout (seconds)", min_value=5, max_value=MAX_TIMEOUT_SECONDS, initial=300
    )
    max_output_mb = forms.IntegerField(
        label="Sandbox output cap (MB)", min_value=1, max_value=MAX_OUTPUT_MB, initial=64
    )
    show_per_site = forms.BooleanField(
        label="Show per-site breakdowns", required=False,
        help_text="Off by default: a per-site score tells vendors more about each site's data than the average.",
    )  # fmt: skip
    min_test_rows = forms.IntegerField(
        label="Minimum test rows per site", min_value=1, initial=50,
        help_text="A site with fewer rows cannot register for the task: a score over a handful of rows says too "
        "much about each row.",
    )  # fmt: skip
    public_split_fraction = forms.FloatField(
        label="Public split fraction", min_value=0.0, max_value=1.0, initial=1.0,
        help_text="Share of each site's test rows scored on the live leaderboard. The rest (the private split) is "
        "scored only once, when the task closes, so probing the live board cannot overfit it. 1 means no private split.",
    )  # fmt: skip
    final_submissions = forms.IntegerField(
        label="Final submissions per vendor", min_value=1, max_value=20, initial=2,
        help_text="How many submissions each vendor nominates for the private (final) leaderboard; only those are "
        "ranked on the private split, so a vendor cannot pick its best private score after the fact.",
    )  # fmt: skip
    leaderboard_mode = forms.ChoiceField(
        label="Leaderboard mode", choices=LeaderboardMode.choices,
        help_text="Plain shows each submission's rounded score. Ladder releases a vendor's score only when a "
        "submission beats its best by a significant margin, which bounds what repeated probing can learn.",
    )  # fmt: skip
    requires_job_approval = forms.BooleanField(
        label="Every job waits for my approval", required=False,
        help_text="No model runs on your data until you approve its job.",
    )  # fmt: skip
    requires_release_approval = forms.BooleanField(
        label="Every result waits for my release", required=False,
        help_text="Sites hold each computed result and send nothing to the hub until you release it; a withheld "
        "result reaches the vendor only as “not released”.",
    )  # fmt: skip
    failed_jobs_consume_quota = forms.BooleanField(
        label="Failed runs count against the quota", required=False, initial=True,
        help_text="A failure is itself a signal a model can encode private data in; counting failures keeps "
        "probing by deliberate crashes within the quota.",
    )  # fmt: skip
    # Differential privacy of the results (docs/disclosure.md).
    dp_epsilon_per_release = forms.FloatField(
        label="Epsilon (ε) per release", min_value=1e-6, required=False, initial=1.0,
        help_text="How much one submission's scores may reveal about any one row of your data: the sites add "
        "Gaussian noise to what they release so that no row changes what a vendor sees by more than a factor "
        "e^ε (with probability δ of more). Smaller is more private and noisier. Default 1. The privacy unit is "
        "one row of a site's test data. Fixed once the task has opened.",
    )  # fmt: skip
    dp_delta = forms.FloatField(
        label="Delta (δ)", min_value=1e-12, max_value=0.000999, required=False, initial=1e-6,
        help_text="The probability with which every ε guarantee on the task may fail; keep it well below "
        "1 / (rows at a site). Default 1e-6. Fixed once the task has opened.",
    )  # fmt: skip
    dp_vendor_epsilon = forms.FloatField(
        label="Epsilon budget per vendor", min_value=1e-6, required=False, initial=10.0,
        help_text="What one vendor organization may learn from your rows over all its submissions (ε add up, "
        "composed by a zCDP accountant): at the defaults (ε 1 per release) about 60 submissions. An upload that "
        "would pass it is refused. Default 10.",
    )  # fmt: skip
    dp_task_epsilon = forms.FloatField(
        label="Epsilon budget for all vendors", min_value=1e-6, required=False, initial=20.0,
        help_text="What all vendors together may learn from your rows, however many organizations they open. "
        "Default 20. The public and the private split each have these budgets; a row is in one split only.",
    )  # fmt: skip
    release_delay_seconds = forms.IntegerField(
        label="Release delay (seconds)", min_value=0, required=False, initial=DEFAULT_RELEASE_DELAY_SECONDS,
        help_text="Results become visible at upload + a multiple of this; vendors see “pending” until then. Longer "
        "than the sandbox timeout, how long a model runs on your data tells no one anything; shorter, a model can "
        "move its result to a later multiple (a few bits per upload, not priced). Default 360 (the default "
        "timeout of 300 s plus a minute); 0 shows results as soon as they are in.",
    )  # fmt: skip
    ladder_threshold = forms.FloatField(
        label="Ladder threshold", min_value=0.0, required=False, initial=0.01,
        help_text="Ladder mode only: a submission's score is shown only if it beats the vendor's best by at least "
        "this much on the primary metric. Default 0.01.",
    )  # fmt: skip
    fine_tuning_allowed = forms.BooleanField(
        label="Allow federated fine-tuning", required=False,
        help_text="Sites train vendor models on local data and send back only clipped, noised updates.",
    )  # fmt: skip
    # Federated fine-tuning privacy policy: copied into each run when the owner approves it.
    fl_privacy_unit = forms.ChoiceField(
        label="Privacy unit", required=False, initial="record",
        choices=[("record", "Record-level DP-SGD: every training row is protected (default)"),
                 ("site", "Site-level: noise on the aggregate protects a whole site (weak with few sites)"),
                 ("none", "None: no differential privacy (opt out; vendors and approvals show a warning)")],
        help_text="What the epsilon protects. Record-level: each site trains with per-row clipping and Gaussian "
        "noise, so one row changes what leaves the site by at most the guarantee; only TorchScript models qualify.",
    )  # fmt: skip
    fl_example_clip_norm = forms.FloatField(
        label="Per-row clip norm", required=False, min_value=1e-9, max_value=1e6, initial=1.0,
        help_text="Record-level only: each training row's gradient is clipped to this L2 norm. Default 1.",
    )  # fmt: skip
    fl_clip_norm = forms.FloatField(
        label="Clip norm (C)", required=False, min_value=1e-9, max_value=1e6, initial=1.0,
        help_text="Each site clips its update to this L2 norm before anything leaves the site, which bounds how "
        "much one site's data can move the model in a round.",
    )  # fmt: skip
    fl_noise_multiplier = forms.FloatField(
        label="Noise multiplier (σ)", required=False, min_value=0.0, max_value=1e3,
        help_text="Record-level: the noise of each DP-SGD step is σ × the per-row clip norm. Empty (the default): "
        "the hub calibrates σ so each run's planned rounds spend exactly the ε cap (e.g. σ 4.24 for ε 8 over 50 "
        "full-batch rounds). Site-level: required; the aggregate carries noise σ × C; with 4 sites even σ = 3.3 "
        "over 20 rounds is ε 8 and destroys the model. The approvals page shows each request's ε before you "
        "approve it.",
    )  # fmt: skip
    fl_dp_delta = forms.FloatField(
        label="Delta (δ)", required=False, min_value=1e-12, max_value=0.999999, initial=1e-5,
        help_text="The probability with which the epsilon guarantee may fail; keep it well below 1 / (rows at a "
        "site).",
    )  # fmt: skip
    fl_epsilon_cap = forms.FloatField(
        label="Epsilon cap (ε) per run", required=False, min_value=1e-9, initial=8.0,
        help_text="A run stops before a round would take its (ε, δ) privacy loss past this. Needs noise above 0. "
        "Empty: no cap (the run stops only after its rounds).",
    )  # fmt: skip
    fl_secure_aggregation = forms.TypedChoiceField(
        label="Secure aggregation", required=False, empty_value=None, coerce=lambda v: v == "on",
        choices=[("on", "On: the hub sees only the sum of the sites' updates (needs 3 sites or more)"),
                 ("off", "Off: the hub sees each site's clipped, noised update")],
        help_text="With it, no single site's update is ever visible to the hub or the vendor; robust rules then "
        "cannot apply.",
    )  # fmt: skip
    fl_robust_rule = forms.ChoiceField(
        label="Robust aggregation rule", required=False, choices=RobustRule.choices,
        help_text="Only without secure aggregation: how the hub combines the individual updates (a median or "
        "trimmed mean limits what one bad site can do). With secure aggregation it must be Mean.",
    )  # fmt: skip
    fl_quantization_bits = forms.IntegerField(
        label="Quantization bits", required=False, min_value=8, max_value=30, initial=20,
        help_text="Precision of each update coordinate under secure aggregation (8–30).",
    )  # fmt: skip
    sample = forms.FileField(
        label="Public sample for dry runs", required=False,
        help_text="Synthetic or non-sensitive rows vendors may download.",
    )  # fmt: skip
    organization = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Organization")

    def __init__(self, *args, organizations=(), frozen: frozenset[str] = frozenset(), **kwargs):
        super().__init__(*args, **kwargs)
        self.metric_names = list(METRICS)
        for name in self.metric_names:
            self.fields[f"metric_{name}"] = forms.BooleanField(label=name, required=False)
            self.fields[f"decimals_{name}"] = forms.IntegerField(
                label=f"Decimals shown for {name}",
                min_value=0,
                max_value=MAX_DECIMALS,
                initial=4,
                required=False,
            )
        self.fields["organization"].choices = [(o.id, o.name) for o in organizations]
        # `frozen`: the spec keys the service no longer lets change (catalog.services.STRUCTURAL_FIELDS).
        for key in frozen:
            for name in self._form_fields_of(key):
                self.fields[name].disabled = True
                self.fields[name].help_text = "Fixed once the task has opened."

    def _form_fields_of(self, spec_key: str) -> list[str]:
        if spec_key == "input_spec":
            return ["n_features", "dtype", "n_classes", "target_min", "target_max"]
        if spec_key == "metrics":
            return [f"{prefix}_{m}" for m in self.metric_names for prefix in ("metric", "decimals")]
        return [spec_key] if spec_key in self.fields else []

    def metric_rows(self):
        return [(self[f"metric_{m}"], self[f"decimals_{m}"], METRICS[m]) for m in self.metric_names]

    @staticmethod
    def initial_from(task) -> dict:
        chosen = {m["name"]: m["decimals"] for m in task.metrics}
        initial = {
            field: getattr(task, field)
            for field in ["title", "description", "rules", "task_type", "primary_metric", "visibility", "opens_at", "closes_at",
                          "quota_per_day", "quota_total", "show_per_site", "min_test_rows", "public_split_fraction",
                          "final_submissions", "leaderboard_mode", "requires_job_approval", "requires_release_approval",
                          "failed_jobs_consume_quota", *DP_FIELDS, "fine_tuning_allowed", *FL_FIELDS]
        }  # fmt: skip
        initial["fl_secure_aggregation"] = "on" if task.fl_secure_aggregation else "off"
        initial.update({k: task.input_spec.get(k) for k in ("n_features", "dtype", "n_classes")})
        initial["target_min"], initial["target_max"] = task.input_spec.get("target_range") or (None, None)
        initial.update(task.resource_limits)
        for name in METRICS:
            initial[f"metric_{name}"] = name in chosen
            initial[f"decimals_{name}"] = chosen.get(name, 4)
        return initial

    def spec(self) -> dict:
        """The service's spec from the cleaned form (parsing only: no rule is decided here)."""
        data = self.cleaned_data
        input_spec = {"n_features": data["n_features"], "dtype": data["dtype"]}
        if data.get("n_classes") is not None and data["task_type"] != TaskType.REGRESSION:
            input_spec["n_classes"] = data["n_classes"]
        if data["task_type"] == TaskType.REGRESSION and (data.get("target_min"), data.get("target_max")) != (None, None):
            input_spec["target_range"] = [data.get("target_min"), data.get("target_max")]
        metrics = [
            {"name": m, "decimals": data.get(f"decimals_{m}") if data.get(f"decimals_{m}") is not None else 4}
            for m in self.metric_names
            if data.get(f"metric_{m}")
        ]
        return {
            "title": data["title"],
            "description": data["description"],
            "rules": data.get("rules", ""),
            "task_type": data["task_type"],
            "input_spec": input_spec,
            "metrics": metrics,
            "primary_metric": data["primary_metric"],
            "visibility": data["visibility"],
            "opens_at": data["opens_at"],
            "closes_at": data["closes_at"],
            "quota_per_day": data["quota_per_day"],
            "quota_total": data["quota_total"],
            "resource_limits": {
                k: data[k] for k in ("memory_mb", "cpus", "timeout_seconds", "max_output_mb")
            },
            "show_per_site": data["show_per_site"],
            "min_test_rows": data["min_test_rows"],
            "public_split_fraction": data["public_split_fraction"],
            "final_submissions": data["final_submissions"],
            "leaderboard_mode": data["leaderboard_mode"],
            "requires_job_approval": data["requires_job_approval"],
            "requires_release_approval": data["requires_release_approval"],
            "failed_jobs_consume_quota": data["failed_jobs_consume_quota"],
            # A privacy field left empty keeps the task's value (or the default).
            **{k: data[k] for k in DP_FIELDS if data.get(k) is not None},
            "fine_tuning_allowed": data["fine_tuning_allowed"],
            # An FL field left out keeps the task's value (or the default); a cap submitted empty means
            # "no cap", a sigma submitted empty "calibrated to the cap".
            **{k: data[k] for k in FL_FIELDS if data.get(k) not in (None, "") or (
                k in ("fl_epsilon_cap", "fl_noise_multiplier") and k in self.data)},  # fmt: skip
        }


class FineTuneForm(forms.Form):
    """What a vendor asks of a federated fine-tuning run; the privacy settings are the task's."""

    rounds = forms.IntegerField(min_value=1, max_value=1000, initial=10, help_text="Federated rounds to run.")
    local_epochs = forms.IntegerField(
        label="Local epochs", min_value=1, max_value=100, required=False,
        help_text="Passes over a site's training rows per round. Empty: 1.",
    )  # fmt: skip
    batch_size = forms.IntegerField(
        label="Batch size", min_value=1, max_value=65536, required=False,
        help_text="Empty: record-level tasks use the smallest site's training rows (one full-batch DP-SGD step per "
        "round: exact accountant, distributed noise under secure aggregation, the best accuracy measured); "
        "others 32.",
    )  # fmt: skip
    learning_rate = forms.FloatField(
        label="Learning rate", min_value=1e-9, max_value=10.0, required=False,
        help_text="Empty: record-level tasks use min(3, 270 / σ_sum²), σ_sum the noise of the sites' sum (3 at "
        "ε 4-8); required otherwise.",
    )  # fmt: skip
    strategy = forms.ChoiceField(
        choices=StrategyName.choices, initial=StrategyName.FEDAVG,
        help_text="FedAvg averages the sites' updates; FedProx adds a proximal term that keeps local training near "
        "the global model; FedAdam applies the average through a server-side Adam step.",
    )  # fmt: skip
    proximal_mu = forms.FloatField(
        label="Proximal μ (FedProx)", required=False, min_value=0.0, max_value=1e3,
        help_text="FedProx only: the weight of the proximal term. Empty: 0.01.",
    )  # fmt: skip
    eta = forms.FloatField(
        label="Server step η (FedAdam)", required=False, min_value=1e-9, max_value=1e3,
        help_text="FedAdam only: the server's Adam step size. Empty: 0.01 (β1 0.9, β2 0.99, τ 0.001).",
    )  # fmt: skip
    min_sites = forms.IntegerField(
        label="Minimum sites per round", min_value=1, max_value=1000, initial=1,
        help_text="A round with fewer contributing sites fails and is retried.",
    )  # fmt: skip
    round_timeout_seconds = forms.IntegerField(
        label="Round timeout (seconds)", min_value=10, max_value=86400, initial=600,
        help_text="A phase moves on with the sites that answered once this has passed.",
    )  # fmt: skip

    def run_values(self) -> dict:
        """run_request's keyword arguments (parsing only)."""
        data = dict(self.cleaned_data)
        mu, eta = data.pop("proximal_mu"), data.pop("eta")
        data["strategy_params"] = (
            {"proximal_mu": mu} if data["strategy"] == StrategyName.FEDPROX and mu is not None else {}
        )  # FedAvg on a record-level task: the hub adds server momentum 0.9 (finetuning.defaults)
        if data["strategy"] == StrategyName.FEDADAM and eta is not None:
            data["strategy_params"] = {"eta": eta}
        return data


class LedgerFilterForm(forms.Form):
    site = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    task = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    vendor = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    kind = forms.ChoiceField(choices=[("", "Any kind"), *EgressKind.choices], required=False)
    since = forms.DateField(
        label="From (UTC)", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label="Until (UTC, inclusive)", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, sites=(), tasks=(), vendors=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].choices = [("", "All sites"), *((s.id, s.name) for s in sites)]
        self.fields["task"].choices = [("", "All tasks"), *((t.id, t.title) for t in tasks)]
        self.fields["vendor"].choices = [("", "All vendors"), *((v.id, v.name) for v in vendors)]

    def filter_params(self) -> dict:
        """The egress app's filter parameters (EgressFilter) for the chosen values."""
        from datetime import timedelta

        data = self.cleaned_data if self.is_valid() else {}
        params = {k: str(data[k]) for k in ("site", "task", "vendor", "kind") if data.get(k)}
        if data.get("since"):
            params["since"] = f"{data['since'].isoformat()}T00:00:00+00:00"
        if data.get("until"):
            params["until"] = f"{(data['until'] + timedelta(days=1)).isoformat()}T00:00:00+00:00"
        return params


class QueueFilterForm(forms.Form):
    """The owner's approval queue narrowed to a task, a vendor or a site (bulk actions apply to
    what matches)."""

    task = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    vendor = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    site = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)

    def __init__(self, *args, tasks=(), vendors=(), sites=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["task"].choices = [("", "All tasks"), *((t.id, t.title) for t in tasks)]
        self.fields["vendor"].choices = [("", "All vendors"), *((v.id, v.name) for v in vendors)]
        self.fields["site"].choices = [("", "All sites"), *((s.id, s.name) for s in sites)]

    def job_filter(self) -> dict:
        """Keyword filters on Job for the chosen values."""
        data = self.cleaned_data if self.is_valid() else {}
        names = {"task": "submission__task_id", "vendor": "submission__vendor_id", "site": "site_id"}
        return {names[k]: data[k] for k in names if data.get(k)}
