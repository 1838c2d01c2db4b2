"""The models match the migrations, and the OpenAPI schema generates without a warning."""

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_have_no_missing_migrations():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:  # --check exits non-zero when a migration is missing
        pytest.fail(f"makemigrations --check found changes:\n{out.getvalue()} (exit {exc.code})")


def test_openapi_schema_validates_without_warnings(tmp_path, capsys):
    schema = tmp_path / "schema.yml"
    try:
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema))
    except SystemExit as exc:
        pytest.fail(f"spectacular failed (exit {exc.code}):\n{capsys.readouterr().err}")
    captured = capsys.readouterr()
    assert "Warning" not in captured.err and "Error" not in captured.err, captured.err
    text = schema.read_text()
    assert "/api/v1/agent/jobs/claim" in text and "siteToken" in text and "personalToken" in text
