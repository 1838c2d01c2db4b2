"""Hub-suite fixtures: the shared ones live in tests/conftest.py."""
