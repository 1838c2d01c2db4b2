"""The hub's Prometheus metrics (docs/running-a-hub.md lists them).

Per-process counters (requests) live in ``REGISTRY``; with several gunicorn workers set
``PROMETHEUS_MULTIPROC_DIR`` (an empty folder, cleared at start) and every worker's counts are
summed at scrape time. Everything about jobs, sites, submissions and rounds is read from the
database at scrape time, so any process answers the same.
"""

from __future__ import annotations

import os
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "vaultbench_http_requests", "HTTP requests answered by the hub", ["method", "view", "status"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "vaultbench_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)  # fmt: skip
ROUND_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class HubStateCollector(Collector):
    """Gauges read from the database when scraped."""

    def collect(self):
        from marketplace.catalog.models import Task
        from marketplace.finetuning.models import RoundRecord
        from marketplace.jobs.models import Job, JobStatus
        from marketplace.sites.models import Site
        from marketplace.submissions.models import Submission

        now = timezone.now()
        jobs = GaugeMetricFamily("vaultbench_jobs", "Jobs by status and kind", labels=["status", "kind"])
        for row in Job.objects.values("status", "kind").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["status"], row["kind"]], row["n"])
        yield jobs
        queued = Job.objects.filter(status=JobStatus.QUEUED).aggregate(n=Count("id"), oldest=Min("created_at"))
        yield GaugeMetricFamily("vaultbench_job_queue_depth", "Jobs queued for a site to claim", value=queued["n"])
        age = (now - queued["oldest"]).total_seconds() if queued["oldest"] else 0.0
        yield GaugeMetricFamily(
            "vaultbench_job_queue_oldest_age_seconds", "Age of the oldest queued job (0: none queued)", value=age
        )
        running = Job.objects.filter(status=JobStatus.RUNNING).aggregate(oldest=Min("started_at"))["oldest"]
        yield GaugeMetricFamily(
            "vaultbench_job_running_oldest_age_seconds", "Age of the longest-running job (0: none running)",
            value=(now - running).total_seconds() if running else 0.0,
        )  # fmt: skip
        seen = GaugeMetricFamily(
            "vaultbench_site_last_heartbeat_timestamp_seconds", "Unix time of each site's last agent heartbeat",
            labels=["site_id", "site"],
        )  # fmt: skip
        silent = GaugeMetricFamily(
            "vaultbench_site_heartbeat_age_seconds", "Seconds since each site's last agent heartbeat",
            labels=["site_id", "site"],
        )  # fmt: skip
        for site_id, name, last in Site.objects.values_list("id", "name", "last_heartbeat_at").order_by("id"):
            if last is not None:
                seen.add_metric([str(site_id), name], last.timestamp())
                silent.add_metric([str(site_id), name], (now - last).total_seconds())
        yield seen
        yield silent
        submissions = GaugeMetricFamily("vaultbench_submissions", "Submissions by status", labels=["status"])
        for row in Submission.objects.values("status").annotate(n=Count("id")).order_by():
            submissions.add_metric([row["status"]], row["n"])
        yield submissions
        tasks = GaugeMetricFamily("vaultbench_tasks", "Tasks by status", labels=["status"])
        for row in Task.objects.values("status").annotate(n=Count("id")).order_by():
            tasks.add_metric([row["status"]], row["n"])
        yield tasks
        yield self._rounds(RoundRecord)

    @staticmethod
    def _rounds(model) -> HistogramMetricFamily:
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        buckets = {f"le_{i}": Count("id", filter=Q(d__lte=timedelta(seconds=b))) for i, b in enumerate(ROUND_BUCKETS)}
        row = model.objects.annotate(d=duration).aggregate(n=Count("id"), total=Sum("d"), **buckets)
        family = HistogramMetricFamily(
            "vaultbench_finetuning_round_duration_seconds", "Duration of federated fine-tuning rounds (every attempt)"
        )
        total = row["total"].total_seconds() if row["total"] else 0.0
        cumulative = [(str(float(b)), row[f"le_{i}"]) for i, b in enumerate(ROUND_BUCKETS)]
        family.add_metric([], cumulative + [("+Inf", row["n"])], sum_value=total)
        return family


REGISTRY.register(HubStateCollector())


def exposition() -> bytes:
    """The text format of every metric; summed across processes under PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(HubStateCollector())
        return generate_latest(registry)
    return generate_latest(REGISTRY)
