"""Tiny trained models: tokenizer round trip, every family builds and learns, caching is stable."""

from __future__ import annotations

import json

import pytest
import torch

from harness.errors import UserError
from harness.models.tiny import (
    FAMILIES,
    arithmetic_problems,
    make_tokenizer,
    tiny_model_folder,
)


def test_char_tokenizer_round_trips_and_prepends_bos():
    tok = make_tokenizer()
    ids = tok("12+7=19")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 8
    assert tok.decode(ids, skip_special_tokens=True) == "12+7=19"


def test_arithmetic_problems_are_seeded_and_correct():
    a, b = arithmetic_problems(50, 3), arithmetic_problems(50, 3)
    assert a == b and a != arithmetic_problems(50, 4)
    for prompt, answer in a:
        x, y = prompt.rstrip("=").split("+")
        assert int(x) + int(y) == int(answer)


def test_unknown_family_is_user_error():
    with pytest.raises(UserError, match="choose one of"):
        tiny_model_folder("bert")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_and_has_a_different_post_variant(family):
    from harness.models.loading import load_model

    post_dir = tiny_model_folder(family, post=True)
    base_dir = tiny_model_folder(family)
    assert tiny_model_folder(family, post=True) == post_dir  # cached
    losses = json.loads((base_dir / "tiny_recipe.json").read_text())["pretrain_loss"]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    base, post = load_model(str(base_dir)), load_model(str(post_dir))
    assert base.info.fingerprint != post.info.fingerprint
    ids = base.tokenizer(["3+4="], return_tensors="pt")
    assert not torch.allclose(base.model(**ids).logits, post.model(**ids).logits)
