"""Hub-suite fixtures: the shared ones live in tests/conftest.py."""

import pytest

from marketplace.accounts.services import personal_token_create
from marketplace.vendor_cli import main


@pytest.fixture
def cli(live_server, vendor, monkeypatch, capsys):
    """The vendor CLI against a live hub over real HTTP, as the ``vendor`` persona."""
    _, token = personal_token_create(user=vendor.user, name="cli")
    monkeypatch.setenv("VAULTBENCH_TOKEN", token)

    def run(*argv):
        code = main(["--hub", live_server.url, *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
