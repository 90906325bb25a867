"""SmolLM2-135M-Instruct answers real reasoning-gym problems, end to end to EAP input rows."""

import pytest

from harness.analysis.accuracy import accuracy_table
from harness.data.generation import Decoding, generate_answers
from harness.data.grading import check_answers, parse_number
from harness.data.problems import load_reasoning_gym
from harness.data.selection import build_eap_rows, select_samples
from harness.models.loading import load_model, smollm2_gguf_path
from harness.models.prompts import TEMPLATES

pytestmark = pytest.mark.slow


def test_smollm2_answers_chain_sum_and_feeds_selection(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(smollm2_gguf_path()))
    problems = load_reasoning_gym("chain_sum", n=8, seed=1234).problems
    decoding = Decoding(max_new_tokens=64, batch_size=8)
    generations = generate_answers(loaded, problems, TEMPLATES["deepseek-math"], decoding)
    checked = check_answers(generations, problems)

    assert all(g.answer_ids and len(g.answer_ids) <= 64 for g in generations)
    assert all(c.check.method != "none" for c in checked)
    correct = sum(c.correct for c in checked)
    assert 0 < correct < len(problems)  # a 135M model gets some, not all, of these right
    for c in checked:
        gold = int(c.check.gold)
        assert c.correct == (c.check.extracted is not None and parse_number(c.check.extracted) == gold)

    monkeypatch.setattr(loaded.model, "generate", lambda *a, **k: pytest.fail("cache missed"))
    assert generate_answers(loaded, problems, TEMPLATES["deepseek-math"], decoding) == generations

    table = accuracy_table(checked, checked, pair="smollm2-self", dataset="chain_sum")
    assert table.base.correct == correct and table.mcnemar_p == 1.0
    selection = select_samples(checked, checked, variant="paper-code", alpha=0.3)
    assert set(selection.ids) <= {c.id for c in checked if c.correct}
    base_rows, post_rows = build_eap_rows(selection, "own")
    assert base_rows == post_rows
    for row, gen, start in zip(base_rows, (c.generation for c in selection.base), selection.base_start):
        # the span starts after the answer's opening (span_start=after_template), which joins the prompt
        assert row["prompt_ids"] == [*gen.prompt_ids, *gen.answer_ids[:start]]
        assert loaded.tokenizer.decode(row["prompt_ids"][:len(gen.prompt_ids)]) == gen.prompt
        assert row["target_ids"] == list(gen.answer_ids[start:start + selection.t_cut])
