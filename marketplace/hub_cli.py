"""``vaultbench-hub``: the hub's ``manage.py`` for an installed package (``vaultbench[hub]``).

    vaultbench-hub migrate
    vaultbench-hub createsuperuser
    gunicorn marketplace.wsgi            # the web process (docs/running-a-hub.md)
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketplace.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["vaultbench-hub", *sys.argv[1:]])


if __name__ == "__main__":
    main()
