"""The versions record: a model load on an engine library version outside it warns in one line,
once per process; a test run whose identity tests passed adds its versions."""

from __future__ import annotations

import json

import harness.versions as versions


def test_a_version_outside_the_record_warns_once(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(versions, "_warned", [])
    installed = versions.engine_versions()
    record = tmp_path / "tested.json"
    record.write_text(json.dumps({"torch": [installed["torch"]], "transformers": ["4.56.0"]}))
    versions.warn_untested_versions(record)
    versions.warn_untested_versions(record)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: transformers {installed['transformers']} has not passed the engine's identity tests "
                   f"(passed: torch {installed['torch']}; transformers 4.56.0); run `make test` to check it"]


def test_versions_inside_the_record_say_nothing_and_a_passing_run_adds_its_own(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(versions, "_warned", [])
    record = tmp_path / "tested.json"
    installed = versions.engine_versions()
    assert versions.untested_versions(record) == [f"torch {installed['torch']}", f"transformers {installed['transformers']}"]
    written = versions.record_tested_versions(record)
    assert json.loads(record.read_text()) == written and versions.untested_versions(record) == []
    versions.warn_untested_versions(record)
    assert capsys.readouterr().err == ""
