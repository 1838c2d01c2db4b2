"""The beat's periodic work, every second (a campaign cannot wait a minute per sweep): expired
leases requeued, submissions a lost message left behind repaired, stuck sites flagged. The same
functions Celery beat runs in production (marketplace/settings.py CELERY_BEAT_SCHEDULE).

    python -m tests.faults.sweeper
"""

import json
import os
import sys
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    django.setup()
    from marketplace.jobs.services import jobs_requeue_expired
    from marketplace.sites.services import sites_flag_stuck
    from marketplace.submissions.reconcile import submissions_reconcile

    while True:
        try:
            moved = jobs_requeue_expired()
            repaired = submissions_reconcile()
            stuck = sites_flag_stuck()
            if moved or any(repaired.values()) or any(stuck.values()):
                print(json.dumps({"requeued": moved, **repaired, **{f"sites_{k}": v for k, v in stuck.items()}}),
                      flush=True)  # fmt: skip
        except Exception as exc:  # the database is briefly locked, the hub restarting
            print(f"sweep failed: {exc}", file=sys.stderr, flush=True)
        time.sleep(1.0)


if __name__ == "__main__":
    main()
