"""Portal fixtures: logged-in browsers (Django's test client) for the shared personas, and a
small world with tasks, a scored submission and ledger rows."""

import pytest
from django.test import Client


def browser_for(persona) -> Client:
    client = Client()
    if persona is not None:
        client.force_login(persona.user)
    return client


@pytest.fixture
def web():
    """web(persona) -> a Django test client logged in as that persona (None: a visitor)."""
    return browser_for
