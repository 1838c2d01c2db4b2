"""The Vaultbench hub (a Django project) and, in ``marketplace.client``, the vendors' SDK.

Importing this package loads nothing: the vendor SDK and CLI must import with only ``requests``
installed. The hub's Celery application is loaded by Django (``marketplace.core`` at start-up)
and by ``celery -A marketplace`` (which finds ``marketplace.celery.app``).
"""
