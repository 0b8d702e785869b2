"""Shared pytest set-up. Fixtures live in tests/fixtures_*.py, loaded as plugins here."""

pytest_plugins = ["tests.fixtures_servers", "tests.fixtures_mesh"]
