"""Shipped answers (harness.data.fixtures) through the audit's real answers stage, on a tiny pair:
a fixture that regenerates token-identically is used and recorded as verified; a fixture with one
tampered answer is caught by the sample check, every answer of that model is regenerated, and the
provenance says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_pairs

from harness.audit.config import AuditConfig
from harness.audit.stages import AuditPipeline
from harness.data.fixtures import build_fixture, write_fixture
from harness.data.generation import Decoding, DecodingSettings
from harness.data.problems import dataset_spec, load_problems
from harness.models.prompts import get_template

QUESTIONS = 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    with pytest.MonkeyPatch.context() as patch:   # absolute model paths in the registry
        patch.setenv("HARNESS_CACHE", str(root / "models"))
        tiny_pairs.write_registry(root / "pairs.toml")
    tiny_pairs.write_dataset(root / "sums.jsonl", QUESTIONS)
    return root


def _pipeline(root: Path, fixtures: Path, monkeypatch, cache: str) -> AuditPipeline:
    monkeypatch.setenv("HARNESS_CACHE", str(root / cache))
    monkeypatch.chdir(root)
    config = AuditConfig(questions=QUESTIONS, answer_fixtures=str(fixtures), fixture_verify_questions=8)
    return AuditPipeline(config, root / "pairs.toml", progress=False)


def _write_fixtures(pipeline: AuditPipeline, folder: Path, batch_size: int = 5) -> dict[str, dict]:
    """Fixtures of both models of tiny-rl, generated in recorded batches of `batch_size`."""
    spec = pipeline.pair("tiny-rl")
    problems = load_problems(dataset_spec("sums.jsonl"), n=QUESTIONS).problems
    decoding = Decoding(max_new_tokens=spec.max_new_tokens, batch_size=batch_size)
    docs = {}
    for side in ("base", "post"):
        docs[side] = build_fixture(pipeline.session.model(spec, side), problems, get_template(spec.prompt_template), decoding,
                                   dataset="sums.jsonl", progress=False)
        write_fixture(folder / f"tiny-rl-{side}.json", docs[side])
    return docs


def test_a_matching_fixture_is_used_and_recorded_as_verified(tiny, monkeypatch):
    folder = tiny / "answers-ok"
    docs = _write_fixtures(_pipeline(tiny, folder, monkeypatch, "cache-build"), folder)
    pipeline = _pipeline(tiny, folder, monkeypatch, "cache-ok")
    answers = pipeline.answers("tiny-rl", "sums.jsonl")
    problems = load_problems(dataset_spec("sums.jsonl"), n=QUESTIONS).problems
    for side in ("base", "post"):
        # the shipped rows carry the dataset's reference solution in the model's tokens (token mode reference)
        tokenizer = pipeline.session.model(pipeline.pair("tiny-rl"), side).tokenizer
        assert [c.generation.reference_ids for c in getattr(answers, side)] == \
               [tuple(tokenizer(p.reference, add_special_tokens=False)["input_ids"]) for p in problems]
        source = answers.sources[side]
        assert source["source"] == "fixture" and source["file"] == f"tiny-rl-{side}.json"
        assert source["verification"]["ok"] and not source["verification"]["mismatched_ids"]
        assert len(source["verification"]["verified_ids"]) >= 8   # whole recorded batches of 5: 10 answers
        shipped = {r["generation"]["prompt"]: list(r["generation"]["answer_ids"]) for r in docs[side]["rows"]}
        assert [list(c.generation.answer_ids) for c in getattr(answers, side)] == \
               [shipped[c.generation.prompt] for c in getattr(answers, side)]


def test_a_tampered_fixture_is_caught_and_regenerated(tiny, monkeypatch):
    folder = tiny / "answers-bad"
    docs = _write_fixtures(_pipeline(tiny, folder, monkeypatch, "cache-build2"), folder)
    rows = docs["post"]["rows"]
    first = next(r for r in rows if r["batch"] == 0)     # inside the sample the check regenerates
    true_ids = list(first["generation"]["answer_ids"])
    first["generation"]["answer_ids"] = true_ids + [true_ids[-1] if true_ids else 0]
    (folder / "tiny-rl-post.json").write_text(json.dumps(docs["post"]))
    pipeline = _pipeline(tiny, folder, monkeypatch, "cache-bad")
    answers = pipeline.answers("tiny-rl", "sums.jsonl")
    post, base = answers.sources["post"], answers.sources["base"]
    assert post["source"] == "regenerated" and post["verification"]["mismatched_ids"] == [first["generation"]["problem_id"]]
    assert base["source"] == "fixture"        # the other model's fixture still verifies
    regenerated = {c.generation.problem_id: list(c.generation.answer_ids) for c in answers.post}
    assert regenerated[first["generation"]["problem_id"]] == true_ids   # the model's own answer, not the fixture's
    assert pipeline.ledger.as_dict()["fixtures:mismatch"] == 1
    cell_provenance = answers.to_json()["sources"]
    assert cell_provenance["post"]["reason"].startswith("the fixture's sample did not regenerate")


def test_no_fixture_for_another_decoding(tiny, monkeypatch):
    folder = tiny / "answers-ok"
    if not folder.is_dir():
        _write_fixtures(_pipeline(tiny, folder, monkeypatch, "cache-build3"), folder)
    monkeypatch.setenv("HARNESS_CACHE", str(tiny / "cache-other"))
    monkeypatch.chdir(tiny)
    config = AuditConfig(questions=QUESTIONS, answer_fixtures=str(folder),
                         decoding=DecodingSettings(max_new_tokens=3))
    answers = AuditPipeline(config, tiny / "pairs.toml", progress=False).answers("tiny-rl", "sums.jsonl")
    assert answers.sources["base"]["source"] == "generated"


def test_a_fixture_of_the_first_questions_is_used_for_those_and_the_rest_generated(tiny, monkeypatch):
    folder = tiny / "answers-part"
    pipeline = _pipeline(tiny, folder, monkeypatch, "cache-build4")
    spec = pipeline.pair("tiny-rl")
    problems = load_problems(dataset_spec("sums.jsonl"), n=QUESTIONS).problems[:10]
    for side in ("base", "post"):
        write_fixture(folder / f"tiny-rl-{side}.json", build_fixture(
            pipeline.session.model(spec, side), problems, get_template(spec.prompt_template),
            Decoding(max_new_tokens=spec.max_new_tokens, batch_size=5), dataset="sums.jsonl", progress=False))
    answers = _pipeline(tiny, folder, monkeypatch, "cache-part").answers("tiny-rl", "sums.jsonl")
    assert answers.sources["base"]["source"] == "fixture" and answers.sources["base"]["verification"]["ok"]
    assert (answers.sources["base"]["from_fixture"], answers.sources["base"]["generated"]) == (10, QUESTIONS - 10)
    assert len(answers.base) == QUESTIONS
