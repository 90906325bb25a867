"""The claim suites. Their options, grid, fixtures and hooks all live in the audit's pytest plugin
(harness.pytest_plugin, wired by the checkout's conftest.py); the claims are the catalogue's
(harness/audit/papers/*.toml)."""
