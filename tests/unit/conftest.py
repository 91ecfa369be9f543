"""Fixtures the unit tests share beyond the top-level conftest."""

from hostile_webhooks import hostile_app  # noqa: F401  (the app of the test_hostile_* files)
