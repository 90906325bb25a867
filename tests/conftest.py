"""Engine tests run offline: no hub look-ups (a hub id must fail fast, not wait on the network).
A run in which every engine identity test passed records the torch and transformers versions it ran
on (harness/tested_versions.json; a model load outside that record warns)."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# EAP against the autograd of explicit edge masks, fast against naive ablation, on every family
IDENTITY_TESTS = ("test_eap_engine.py", "test_ablation.py")
_identity = {"passed": 0, "failed": 0}


def pytest_runtest_logreport(report):
    if Path(report.fspath).name not in IDENTITY_TESTS:
        return
    if report.failed:
        _identity["failed"] += 1
    elif report.when == "call" and report.passed:
        _identity["passed"] += 1


def pytest_sessionfinish(session, exitstatus):
    if _identity["passed"] and not _identity["failed"] and not hasattr(session.config, "workerinput"):
        from harness.versions import record_tested_versions
        record_tested_versions()
