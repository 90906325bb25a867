"""The bad-input catalogue: every CLI and the audit answer a bad input with exit status 2 and one
line on stderr that says what was wrong (no traceback, no silently wrong result).

Each row runs the real command line (`harness.cli.main`, what `python -m harness` calls) on files
made by the `world` fixture: {M} a tiny llama folder, {ROWS} valid EAP rows, {EAP}/{ABL} the outputs
of `eap` and `ablate` on them, {BASE}/{POST} checked generations, {FILE} a plain file (in place of a
folder), {RO} a read-only folder, {REPORTS} a reports folder holding the run `old-run`, {T} an empty
scratch folder. Most rows fail before a model loads.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_factories import tiny_model

from harness.audit.verdicts import CLAIMS_SCHEMA_VERSION, CellResult, Verdict
from harness.cli import main
from harness.data.generation import Generation, save_generations
from harness.data.grading import Check
from harness.models.tiny import make_tokenizer, tiny_model_folder

AS_ROOT = os.geteuid() == 0   # root writes into read-only folders: those rows cannot fail there
READ_ONLY = pytest.mark.skipif(AS_ROOT, reason="root ignores folder permissions")
PROGRESS = re.compile(r"\d+/\d+ \[[0-9:<?]+")   # a progress bar (loading a model's weights) is not a message

CASES = [
    # id                         command line                                                    message      [marks]
    ("eap-batch-size-0",         "eap --model {M} --input {ROWS} --out {T}/o --batch-size 0",      "--batch-size must be at least 1, got 0"),
    ("eap-batch-size-text",      "eap --model {M} --input {ROWS} --out {T}/o --batch-size two",    "--batch-size must be a whole number, got 'two'"),
    ("eap-method",               "eap --model {M} --input {ROWS} --out {T}/o --method ig",         "unknown attribution method 'ig'"),
    ("eap-steps-negative",       "eap --model {M} --input {ROWS} --out {T}/o --method lookahead --steps -1", "lookahead steps must be a whole number ≥ 0"),
    ("eap-steps-without-lookahead", "eap --model {M} --input {ROWS} --out {T}/o --steps 2",        "--steps applies to method lookahead only"),
    ("eap-steps-text",           "eap --model {M} --input {ROWS} --out {T}/o --method lookahead --steps x", "--steps must be a whole number, got 'x'"),
    ("eap-lookahead-targets",    "eap --model {M} --input {ROWS} --out {T}/o --method lookahead --positions targets", "use --positions all"),
    ("eap-input-missing",        "eap --model {M} --input {T}/none.jsonl --out {T}/o",             "none.jsonl does not exist"),
    ("eap-model-missing",        "eap --model {T}/nowhere --input {ROWS} --out {T}/o",             "does not exist"),
    ("eap-token-beyond-vocab",   "eap --model {M} --input {BIG} --out {T}/o",                      "≥ the vocabulary size 64"),
    ("eap-out-is-a-file",        "eap --model {M} --input {ROWS} --out {FILE}",                    "--out {FILE} is a file, not a folder"),
    ("eap-out-under-a-file",     "eap --model {M} --input {ROWS} --out {FILE}/sub",                "--out {FILE}/sub: {FILE} is a file, not a folder"),
    ("eap-out-read-only", "eap --model {M} --input {ROWS} --out {RO}/o", "is not writable", READ_ONLY),
    ("ablate-sample-0",          "ablate --model {M} --input {ROWS} --out {T}/o --edges sample:0", "sample at least one edge (sample:N with N >= 1)"),
    ("ablate-sample-text",       "ablate --model {M} --input {ROWS} --out {T}/o --edges sample:x", "write sample:N with a whole number N"),
    ("ablate-edges-not-a-file",  "ablate --model {M} --input {ROWS} --out {T}/o --edges some",     "use all, sample:N, or a JSON file"),
    ("ablate-edges-empty-list",  "ablate --model {M} --input {ROWS} --out {T}/o --edges {EMPTY}",  "expected a non-empty JSON list of [source, destination] pairs"),
    ("ablate-edge-twice",        "ablate --model {M} --input {ROWS} --out {T}/o --edges {DUPEDGE}", "edge [0, 0] is given twice (as [0, 0]); give each edge once"),   # a03
    ("ablate-corrupted-with-zero", "ablate --model {M} --input {ROWS} --out {T}/o --kind zero --corrupted {ROWS} --edges sample:4", "--corrupted applies to --kind patch"),   # a04
    ("ablate-eap-other-layout",  "ablate --model {M} --input {ROWS} --out {T}/o --sampling stratified --eap {EAPBLOCK} --edges sample:5", "scored the block layout, but this ablation runs the paper layout"),   # a02
    ("generate-temperature-tiny", "generate --model {M} --dataset {T0}/noanswer.jsonl --n 1 --template bare --max-new-tokens 4 --sample --temperature 1e-300 --out {T}/g.jsonl", "sampling needs a finite temperature >= 0.01"),   # g01
    ("ablate-edges-bad-pair",    "ablate --model {M} --input {ROWS} --out {T}/o --edges {BADEDGE}", "each edge must be a [source, destination] pair of names or indices"),
    ("ablate-stratified-no-eap", "ablate --model {M} --input {ROWS} --out {T}/o --sampling stratified", "--sampling stratified needs --eap"),
    ("ablate-seed-negative",     "ablate --model {M} --input {ROWS} --out {T}/o --seed -1",        "--seed must be at least 0, got -1"),
    ("ablate-out-is-a-file",     "ablate --model {M} --input {ROWS} --out {FILE}",                 "is a file, not a folder"),
    ("fidelity-top-k-negative",  "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --top-k -1",   "--top-k must be at least 1, got -1"),
    ("fidelity-top-k-0",         "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --top-k 0",    "--top-k must be at least 1, got 0"),
    ("fidelity-top-k-too-many",  "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --top-k 999",  "--top-k must be between 1 and the 8 ablated edges, got 999"),
    ("fidelity-level",           "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --level 1.5",  "--level must be a number in [0.5, 1), got 1.5"),
    ("fidelity-level-tiny",      "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --level 1e-9", "--level must be a number in [0.5, 1), got 1e-9"),   # f04
    ("posttrain-table-out-md",   "posttrain-table {PTTRUNC} --out {T}/t.md",                       "--out {T}/t.md: give the JSON file"),   # t01
    ("fidelity-threshold",       "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --threshold 2", "--threshold must be a number in [-1, 1], got 2"),
    ("fidelity-other-model",     "fidelity --eap {EAP} --ablation {ABLOTHER} --out {T}/f",         "but --ablation {ABLOTHER} ablated {T0}/other"),   # f01
    ("fidelity-ablation-truncated", "fidelity --eap {EAP} --ablation {ABLTRUNC} --out {T}/f",      "ablation record {ABLTRUNC}/ablation.json is not valid JSON"),   # f05
    ("posttrain-table-truncated", "posttrain-table {PTTRUNC} --out {T}/t.json",                    "held-out table {PTTRUNC}/heldout.json is not valid JSON"),   # t02
    ("posttrain-eval-bad-summary", "posttrain-eval {PTBADSUM} --answers fixtures/smollm2/answers", "training summary {PTBADSUM}/train_summary.json is not valid JSON"),   # t03
    ("fidelity-threshold-nan",   "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --threshold nan", "--threshold must be a number in [-1, 1], got nan"),
    ("fidelity-n-boot-0",        "fidelity --eap {EAP} --ablation {ABL} --out {T}/f --n-boot 0",   "--n-boot must be at least 1, got 0"),
    ("fidelity-ablation-missing", "fidelity --eap {EAP} --ablation {T}/none --out {T}/f",          "ablation.safetensors is missing; run `python -m harness ablate` first"),
    ("fidelity-out-is-a-file",   "fidelity --eap {EAP} --ablation {ABL} --out {FILE}",             "--out {FILE} is a file, not a folder"),
    ("generate-n-negative",      "generate --model {M} --dataset rg:chain_sum --n -5 --out {T}/g.jsonl", "--n must be between 1 and 1000000, got -5"),
    ("generate-n-0",             "generate --model {M} --dataset rg:chain_sum --n 0 --out {T}/g.jsonl", "--n must be between 1 and 1000000, got 0"),
    ("generate-model-no-tokenizer", "generate --model {T0}/notok --dataset rg:chain_sum --n 1 --out {T}/g.jsonl", "model folder {T0}/notok has no tokenizer files"),   # g02
    ("generate-n-huge",          "generate --model {M} --dataset rg:chain_sum --n 1000000000000 --out {T}/g.jsonl", "got 1000000000000"),
    ("generate-n-expression",    "generate --model {M} --dataset rg:chain_sum --n 10**12 --out {T}/g.jsonl", "--n must be a whole number, got '10**12'"),
    ("generate-empty-stop",      "generate --model {M} --dataset rg:chain_sum --stop '' --out {T}/g.jsonl", "stop strings must be non-empty text, got ''"),
    ("generate-max-new-tokens",  "generate --model {M} --dataset rg:chain_sum --max-new-tokens 0 --out {T}/g.jsonl", "--max-new-tokens must be at least 1, got 0"),
    ("generate-temperature",     "generate --model {M} --dataset rg:chain_sum --sample --temperature 0 --out {T}/g.jsonl", "--temperature must be a number in (0, inf), got 0"),
    ("generate-top-p",           "generate --model {M} --dataset rg:chain_sum --top-p 1.5 --out {T}/g.jsonl", "--top-p must be a number in (0, 1], got 1.5"),
    ("generate-template",        "generate --model {M} --dataset rg:chain_sum --template nope --out {T}/g.jsonl", "unknown prompt template 'nope'"),
    ("generate-dataset",         "generate --model {M} --dataset nope --out {T}/g.jsonl",          "is neither a JSONL file nor rg:<task> nor hf:<hub id>"),
    ("generate-out-is-a-folder", "generate --model {M} --dataset rg:chain_sum --out {T}",          "is a folder; give a file path"),
    ("generate-out-under-a-file", "generate --model {M} --dataset rg:chain_sum --out {FILE}/g.jsonl", "--out {FILE}/g.jsonl: {FILE} is a file, not a folder"),
    ("check-generations-missing", "check --generations {T}/none.jsonl --dataset rg:chain_sum --out {T}/c.jsonl", "none.jsonl does not exist; run `python -m harness generate` first"),
    ("check-n-0",                "check --generations {BASE} --dataset rg:chain_sum --n 0 --out {T}/c.jsonl", "--n must be between 1 and 1000000, got 0"),
    ("select-alpha-0",           "select --base {BASE} --post {POST} --alpha 0 --out {T}/s",        "--alpha must be a number in (0, 1], got 0"),
    ("select-alpha-above-1",     "select --base {BASE} --post {POST} --alpha 1.5 --out {T}/s",      "--alpha must be a number in (0, 1], got 1.5"),
    ("select-n-0",               "select --base {BASE} --post {POST} --n 0 --out {T}/s",            "--n must be at least 1, got 0"),
    ("select-beta-negative",     "select --base {BASE} --post {POST} --beta -1 --out {T}/s",        "--beta must be a number in [0, inf), got -1"),
    ("select-beta-above-gamma",  "select --base {BASE} --post {POST} --beta 2 --gamma 1 --out {T}/s", "need 0 <= beta <= gamma"),
    ("select-string-token-ids",  "select --base {STRIDS} --post {POST} --out {T}/s",                "answer_ids must be a list of token ids (whole numbers >= 0)"),
    ("select-base-missing",      "select --base {T}/none.jsonl --post {POST} --out {T}/s",          "generations file {T}/none.jsonl does not exist"),
    ("select-out-is-a-file",     "select --base {BASE} --post {POST} --out {FILE}",                 "is a file, not a folder"),
    ("report-merge-out-is-a-file", "report merge {T}/none --out {FILE}",                            "--out {FILE} is a file, not a folder"),
    ("report-merge-out-read-only", "report merge {T}/none --out {RO}/m", "is not writable", READ_ONLY),
    ("report-merge-shard-missing", "report merge {T}/none --out {T}/m",                             "{T}/none: no such claims file"),
    ("report-diff-not-claims",   "report diff {NOTCLAIMS} {NOTCLAIMS}",                             "not a claims file (expected \"schema\""),
    ("report-diff-schema-0",     "report diff {V0} {V0}",                                           "schema_version 0 is not supported"),   # r03
    ("report-diff-schema-true",  "report diff {VTRUE} {VTRUE}",                                     "schema_version True is not supported"),   # r04
    ("report-diff-nan",          "report diff {CNAN} {CNAN}",                                       "NaN is not a JSON number"),   # r05
    ("audit-fixtures-missing",   "audit --set answer_fixtures={T}/nowhere",                         "answer_fixtures '{T}/nowhere' is no folder"),   # u08
    ("gpu-check-out-is-a-folder", "gpu-check --dry-run --out {T}",                                  "is a folder; give a file path"),   # q01
    ("posttrain-steps-0",        "posttrain --algo grpo --steps 0 --out {T}/p",                     "--steps must be at least 1, got 0"),
    ("posttrain-lr",             "posttrain --algo grpo --lr 0 --out {T}/p",                        "--lr must be a number in (0, 1], got 0"),
    ("posttrain-out-is-a-file",  "posttrain --algo grpo --out {FILE}",                              "--out {FILE} is a file, not a folder"),
    ("posttrain-eval-no-run",    "posttrain-eval {T} --answers {T}",                                "train_summary.json missing; run `python -m harness posttrain"),
    ("answer-fixtures-questions-0", "answer-fixtures --out {T}/a --questions 0",                   "--questions must be at least 1, got 0"),
    ("answer-fixtures-no-pair",  "answer-fixtures --out {T}/a --pairs nope",                        "no bundled adapter pairs selected"),
    ("posttrain-table-missing",  "posttrain-table {T} --out {T}/table.json",                        "heldout.json missing; run `python -m harness posttrain ... --eval-n N` first"),
    ("audit-alpha-twice",        "audit --alphas 0.3,0.30",                                         "--alphas: 0.3 is given twice; give each alpha once"),
    ("audit-alpha-text",         "audit --alphas 0.1,x",                                            "--alphas: 'x' is not a number"),
    ("audit-alpha-outside",      "audit --alphas 1.5",                                              "--alphas must be in (0, 1], got 1.5"),
    ("audit-alpha-none",         "audit --alphas ,",                                                "give at least one alpha in (0, 1]"),
    ("audit-n-0",                "audit --n 0",                                                     "--n must be at least 1, got 0"),
    ("audit-questions-0",        "audit --questions 0",                                             "--questions must be between 1 and 1000000, got 0"),
    ("audit-threads-0",          "audit --threads 0",                                               "--threads must be at least 1, got 0"),
    ("audit-fidelity-edges-0",   "audit --fidelity-edges 0",                                        "--fidelity-edges must be at least 1, got 0"),
    ("audit-reports-dir-file",   "audit --reports-dir {FILE}",                                      "--reports-dir {FILE} is a file, not a folder"),
    ("audit-reports-dir-read-only", "audit --reports-dir {RO}/r", "is not writable", READ_ONLY),
    ("audit-run-id-exists",      "audit --run-id old-run --reports-dir {REPORTS}",                  "--run-id old-run: {REPORTS}/old-run already exists; choose another run id or pass --overwrite"),
    ("audit-run-id-path",        "audit --run-id ../x --reports-dir {REPORTS}",                     "--run-id '../x': use letters, digits"),
    ("audit-vary-one-value",     "audit --vary metrics.bins=20",                                    "expected KEY=V1,V2[,...] with at least two values"),
    ("audit-vary-repeated",      "audit --vary stats.sesoi_rel=0.1,0.10",                           "'0.10' sets stats.sesoi_rel as an earlier value does; give each value once"),  # u12
    ("audit-unknown-setting",    "audit --set loudness=3",                                          "loudness"),
    ("audit-set-stats-seed",     "audit --set stats.seed=-1",                                       "stats.seed must be at least 0, got -1"),          # u03
    ("audit-set-beta-gamma",     "audit --set selection.beta=2 --set selection.gamma=1",            "need 0 <= beta <= gamma, got beta=2.0, gamma=1.0"),  # u04
    ("audit-set-dtype",          "audit --set dtype=int8",                                          "dtype must be one of float32, bfloat16, float16, float64, got 'int8'"),  # u05
    ("audit-set-device",         "audit --set device=meta",                                         "unknown device 'meta'; use cpu or cuda[:N]"),     # u06
    ("audit-set-and-flag",       "audit --questions 120 --set questions=7",                         "--set questions=7 and --questions 120 both set questions; give one"),  # u07
    ("audit-set-temperature-inf", "audit --set decoding.mode=sample --set decoding.temperature=inf", "sampling needs a finite temperature >= 0.01"),      # u10
    ("audit-set-n-boot",         "audit --set stats.n_boot=1",                                      "stats.n_boot must be at least 10, got 1"),        # u11
    ("audit-set-old-key",        "audit --set stats.alpha=0.1",                                     "--set stats.alpha: this setting is now stats.significance"),
    ("audit-run-id-too-long",    "audit --run-id " + "a" * 300,                                     "--run-id: 300 characters; give at most 200"),   # u13
    ("audit-registry-name-int",  "audit --registry {REGNAMEINT}",                                   "pair #1: name must be text (in quotes), got 5"),   # u19
    ("audit-registry-base-int",  "audit --registry {REGBASEINT}",                                   "base must be text (in quotes), got 5"),   # u28
    ("audit-registry-bool-budget", "audit --registry {REGBOOL}",                                    "max_new_tokens must be a positive integer, got True"),   # u18
    ("plan-architecture-negative", "plan --registry {REGARCHNEG} --pairs ok --device cpu --memory 80GiB", "num_hidden_layers must be a whole number of at least 1, got -4"),   # p03
    ("eap-out-name-too-long",    "eap --model {M} --input {ROWS} --out {T}/" + "a" * 300,          "is 300 characters; a file or folder name holds at most 255 bytes"),   # e03
    ("answer-fixtures-threads-negative", "answer-fixtures --out {T}/x --pairs smollm2-grpo --questions 1 --threads -1", "--threads must be"),   # x01
    ("eap-garbage-safetensors",  "eap --model {GARBAGE} --input {ROWS} --out {T}/o",               "a weight file is not valid safetensors (Error while deserializing header: header too large)"),
    ("eap-empty-safetensors",    "eap --model {EMPTYW} --input {ROWS} --out {T}/o",                "a weight file is not valid safetensors (Error while deserializing header: header too small)"),
    ("eap-truncated-safetensors", "eap --model {TRUNC} --input {ROWS} --out {T}/o",                "is not valid safetensors (Error while deserializing header: incomplete metadata"),
    ("eap-missing-tensor",       "eap --model {MISSING} --input {ROWS} --out {T}/o",               "1 weight(s) missing from its checkpoint or of the wrong shape for its config (e.g. model.layers.1.mlp.down_proj.weight)"),
    ("eap-config-more-layers",   "eap --model {LAYERS3} --input {ROWS} --out {T}/o",               "weight(s) missing from its checkpoint or of the wrong shape for its config (e.g. model.layers.2."),
    ("eap-not-gguf",             "eap --model {FAKEGGUF} --input {ROWS} --out {T}/o",              "does not start with the GGUF magic bytes, so it is not a GGUF file"),
    ("eap-input-not-utf8",       "eap --model {M} --input {LATIN1} --out {T}/o",                   "input file {LATIN1} is not UTF-8 text (byte 0xe9 on line 1); save it as UTF-8"),
    ("generate-dataset-not-utf8", "generate --model {M} --dataset {LATIN1} --out {T}/g.jsonl",     "dataset file {LATIN1} is not UTF-8 text (byte 0xe9 on line 1)"),
    ("generate-prompt-beyond-context", "generate --model {TINY} --dataset {LONGQ} --template bare --out {T}/g.jsonl", "tokens, at least the model's context of 256"),
    ("select-generations-not-utf8", "select --base {LATIN1} --post {POST} --out {T}/s",            "generations file {LATIN1} is not UTF-8 text"),
    ("report-merge-typed-field", "report merge {BADTYPE} --out {T}/m",                              "field verdict must be str, got 5"),
    ("audit-registry-missing",   "audit --registry {T}/none.toml",                                  "pair registry {T}/none.toml does not exist"),
    ("audit-registry-not-toml",  "audit --registry {BADTOML}",                                      "is not valid TOML: Expected ']]'"),
    ("audit-registry-not-utf8",  "audit --registry {LATIN1TOML}",                                   "pair registry {LATIN1TOML} is not UTF-8 text (byte 0xe9 on line 2)"),
    ("audit-post-model-missing", "audit --registry {REGISTRY} --pairs lost",                        "pair lost: the post model {T0}/nowhere does not exist"),
    ("audit-post-no-tokenizer",  "audit --registry {REGNOTOK} --pairs ok",                          "pair ok: the post model folder {T0}/notok has no tokenizer files"),   # u22
    ("audit-adapter-other-base", "audit --registry {REGADAPTER} --pairs ok",                        "pair ok: the post adapter {T0}/adapter_other was made for {T0}/file, not for the pair's base"),   # u25
    ("audit-post-bad-tokenizer", "audit --registry {REGBADTOK} --pairs ok",                         "pair ok: the post model's {T0}/badtok/tokenizer.json is not valid JSON"),   # u23
    ("audit-post-missing-tensor", "audit --registry {REGMISSING} --pairs ok",                      "pair ok: the post model {T0}/missing: 1 weight(s) missing from its checkpoint or of the wrong shape for its config (e.g. model.layers.1.mlp.down_proj.weight)"),   # u26
    ("audit-post-config-more-layers", "audit --registry {REGLAYERS3} --pairs ok",                  "pair ok: the post model {T0}/layers3: 9 weight(s) missing from its checkpoint or of the wrong shape for its config (e.g. model.layers.2."),   # u27
    ("audit-adapter-missing",    "audit --registry {REGISTRY} --pairs no-adapter",                  "pair no-adapter: the post adapter folder {M} has no adapter_config.json"),
    ("audit-dataset-no-answer",  "audit --registry {REGISTRY} --pairs ok",                          "noanswer.jsonl:1: expected fields question+answer (GSM8K) or problem+solution (MATH), got ['question']"),
    ("audit-unknown-pair",       "audit --registry {REGISTRY} --pairs nope",                        "--pairs: unknown nope; known pairs: lost, no-adapter, ok"),
    ("audit-will-not-fit",       "audit --memory 1MiB --reports-dir {T}/r",                         "the planner predicts"),
    ("audit-shard-text",         "audit --shard x",                                                 "--shard 'x': give i/N with 1 <= i <= N, e.g. --shard 1/4"),
    ("audit-shard-beyond",       "audit --shard 3/2",                                               "--shard '3/2': give i/N with 1 <= i <= N"),
    ("audit-shard-too-many",     "audit --shard 1/99 --reports-dir {T}/r",                          "--shard 1/99: the grid has 6 groups of cells (one per pair, one for the cells of no pair); use at most 6 shards"),
    ("audit-workers-0",          "audit --workers 0",                                               "--workers must be at least 1, got 0"),
    ("cluster-shards-0",         "cluster --shards 0",                                              "--shards must be at least 1, got 0"),
    ("cluster-no-slurm",         "cluster --shards 2 --reports-dir {T}/r",                          "--executor slurm: no SLURM here (srun not found)"),   # k01
    ("cluster-own-flag",         "cluster --shards 2 --executor local --reports-dir {T}/r -- --shard 1/2", "--shard: the cluster launcher sets --shard, --run-id and --reports-dir for each shard"),
    ("cluster-run-id-exists",    "cluster --shards 2 --executor local --run-id old-run --reports-dir {REPORTS}", "{REPORTS}/old-run already exists; choose another --run-id"),
    ("audit-memory-text",        "audit --memory lots --reports-dir {T}/r",                         "--memory must be a size like 80GiB, 24GB or 512MiB, got 'lots'"),
    ("plan-unknown-pair",        "plan --pairs nope",                                               "--pairs: unknown nope; known pairs:"),
    ("plan-memory-negative",     "plan --pairs smollm2-grpo --memory=-3GiB",                        "--memory must be a size like 80GiB"),
    ("plan-alpha-repeated",      "plan --pairs smollm2-grpo --alphas 0.3,0.3",                      "--alphas: 0.3 is given twice; give each alpha once"),
    ("plan-alpha-out-of-range",  "plan --pairs smollm2-grpo --alphas 0,0.5",                        "--alphas must be in (0, 1], got 0.0"),
    ("plan-does-not-fit",        "plan --pairs deepseek-math --device cuda --memory 8GiB",          "stage(s) cannot fit 8.00 GiB: deepseek-math load needs 12.87 GiB"),
    ("gpu-check-no-cuda",        "gpu-check --out {T}/g.json",                                      "CUDA is not available here"),
]

REGISTRY = """
[[pair]]
name = "lost"
family = "llama"
base = "{M}"
post = "{T0}/nowhere"
algorithm = "grpo"
algorithm_kind = "online-rl"
prompt_template = "bare"
max_new_tokens = 4
datasets = ["{NOANSWER}"]

[[pair]]
name = "no-adapter"
family = "llama"
base = "{M}"
post_adapter = "{M}"
algorithm = "grpo"
algorithm_kind = "online-rl"
prompt_template = "bare"
max_new_tokens = 4
datasets = ["{NOANSWER}"]

[[pair]]
name = "ok"
family = "llama"
base = "{M}"
post = "{M}"
algorithm = "grpo"
algorithm_kind = "online-rl"
prompt_template = "bare"
max_new_tokens = 4
datasets = ["{NOANSWER}"]
"""


def _damaged_copies(root: Path) -> dict[str, Path]:
    """Copies of the tiny model whose weight file is garbage, empty or cut in half."""
    weights = (root / "model" / "model.safetensors").read_bytes()
    out = {}
    for name, data in (("GARBAGE", b"not a safetensors file " * 8), ("EMPTYW", b""), ("TRUNC", weights[: len(weights) // 2])):
        folder = root / name.lower()
        shutil.copytree(root / "model", folder)
        (folder / "model.safetensors").write_bytes(data)
        out[name] = folder
    from safetensors.torch import load_file, save_file  # findings e05, e06: a checkpoint that loads, damaged
    tensors = load_file(root / "model" / "model.safetensors")
    shutil.copytree(root / "model", root / "missing")
    save_file({k: v for k, v in tensors.items() if "layers.1.mlp.down_proj" not in k},
              root / "missing" / "model.safetensors", metadata={"format": "pt"})
    shutil.copytree(root / "model", root / "layers3")
    config = json.loads((root / "model" / "config.json").read_text())
    (root / "layers3" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    return {**out, "MISSING": root / "missing", "LAYERS3": root / "layers3"}


def _generations(path: Path, answer_ids=None) -> Path:
    gens = [Generation(f"q{i}", "p", (7, 8, 9), tuple(range(20 + i)), "t", "eos", "sha256:x", "bare")
            for i in range(4)]
    save_generations(path, gens, [Check(f"q{i}", "1", "boxed", "1", True) for i in range(4)])
    if answer_ids is not None:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows[1]["answer_ids"] = answer_ids
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-inputs")
    tiny_model("llama", dtype=torch.float32).save_pretrained(root / "model")
    make_tokenizer().save_pretrained(root / "model")
    rows = [{"id": f"q{i}", "prompt_ids": [1, 2, 3 + i], "target_ids": [5, 6]} for i in range(3)]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "big.jsonl").write_text(json.dumps({"id": "a", "prompt_ids": [1], "target_ids": [9999]}) + "\n")
    (root / "file").write_text("a file, not a folder\n")
    (root / "empty.json").write_text("[]")
    (root / "badedge.json").write_text('[[1.5, "x"]]')
    (root / "dupedge.json").write_text('[["embed", "attn.0.q"], [0, 0], [1, 3]]')                 # a03
    (root / "notclaims.json").write_text('{"a": 1}')
    head = '{"schema": "rl-circuit-audit/claims", "cells": [], "schema_version": '
    (root / "claims_v0.json").write_text(head + "0}")                                           # r03
    (root / "claims_vtrue.json").write_text(head + "true}")                                     # r04
    (root / "claims_nan.json").write_text(head + '2, "summary": {"x": NaN}}')                  # r05
    (root / "ro").mkdir(mode=0o500)
    (root / "reports" / "old-run").mkdir(parents=True)
    (root / "fake.gguf").write_bytes(b"this is not a GGUF file " * 8)
    (root / "latin1.jsonl").write_bytes('{"question": "caf\xe9: 1+1?", "answer": "#### 2"}\n'.encode("latin-1"))
    (root / "latin1.toml").write_bytes('[[pair]]\nname = "caf\xe9"\n'.encode("latin-1"))
    (root / "bad.toml").write_text("[[pair]\nname =")
    (root / "noanswer.jsonl").write_text(json.dumps({"question": "1+1?"}) + "\n")
    (root / "longq.jsonl").write_text(json.dumps({"question": "one plus one " * 200, "answer": "#### 2"}) + "\n")
    (root / "pairs.toml").write_text(REGISTRY.format(M=root / "model", T0=root, NOANSWER=root / "noanswer.jsonl"))
    one = REGISTRY.format(M=root / "model", T0=root, NOANSWER=root / "noanswer.jsonl").split("[[pair]]")[3]
    (root / "reg_name_int.toml").write_text("[[pair]]" + one.replace('name = "ok"', "name = 5"))                   # u19
    (root / "reg_base_int.toml").write_text("[[pair]]" + one.replace(f'base = "{root / "model"}"', "base = 5"))   # u28
    (root / "reg_bool_tokens.toml").write_text("[[pair]]" + one.replace("max_new_tokens = 4", "max_new_tokens = true"))
    (root / "reg_notok.toml").write_text("[[pair]]" + one.replace(f'post = "{root / "model"}"',
                                                                  f'post = "{root / "notok"}"'))   # u22
    tiny_model("llama", dtype=torch.float32).save_pretrained(root / "notok")
    shutil.copytree(root / "model", root / "badtok")                                           # u23
    (root / "badtok" / "tokenizer.json").write_text('{"version": "1.0", "truncation": ')
    (root / "reg_badtok.toml").write_text("[[pair]]" + one.replace(f'post = "{root / "model"}"',
                                                                   f'post = "{root / "badtok"}"'))
    (root / "adapter_other").mkdir()                                                           # u25
    (root / "adapter_other" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(root / "file")}))
    (root / "reg_adapter_other.toml").write_text("[[pair]]" + one.replace(
        f'post = "{root / "model"}"', f'post_adapter = "{root / "adapter_other"}"'))
    (root / "reg_arch_neg.toml").write_text("[[pair]]" + one + '\n[architectures."org/neg"]\nnum_hidden_layers = -4\n')
    for name in ("missing", "layers3"):   # u26, u27: written by _damaged_copies
        (root / f"reg_{name}.toml").write_text("[[pair]]" + one.replace(f'post = "{root / "model"}"',
                                                                          f'post = "{root / name}"'))
    cell = CellResult("C1", "intensity", "C1-x", Verdict.INCONCLUSIVE, "rule", "reason", "p", "d", 0.1,
                      "intensity", "own").to_dict()
    claims = {"schema": "rl-circuit-audit/claims", "schema_version": CLAIMS_SCHEMA_VERSION, "run_id": "x",
              "created": "now", "summary": {}, "provenance": {}, "figures": [], "cells": [{**cell, "verdict": 5}]}
    (root / "badtype.json").write_text(json.dumps(claims))
    names = {**_damaged_copies(root), "FAKEGGUF": root / "fake.gguf", "LATIN1": root / "latin1.jsonl",
             "LATIN1TOML": root / "latin1.toml", "BADTOML": root / "bad.toml", "LONGQ": root / "longq.jsonl",
             "TINY": tiny_model_folder("llama").resolve(), "REGISTRY": root / "pairs.toml", "T0": root,
             "BADTYPE": root / "badtype.json",
             "M": root / "model", "ROWS": root / "rows.jsonl", "BIG": root / "big.jsonl", "FILE": root / "file",
             "V0": root / "claims_v0.json", "VTRUE": root / "claims_vtrue.json", "CNAN": root / "claims_nan.json",
             "DUPEDGE": root / "dupedge.json", "EMPTY": root / "empty.json", "BADEDGE": root / "badedge.json", "NOTCLAIMS": root / "notclaims.json",
             "RO": root / "ro", "REPORTS": root / "reports", "EAP": root / "eap", "ABL": root / "abl",
             "ABLOTHER": root / "abl-other", "EAPBLOCK": root / "eap-block", "ABLTRUNC": root / "abl-trunc", "PTTRUNC": root / "pt_trunc" / "grpo",
             "PTBADSUM": root / "pt_badsum" / "grpo", "REGNAMEINT": root / "reg_name_int.toml",
             "REGBASEINT": root / "reg_base_int.toml", "REGBOOL": root / "reg_bool_tokens.toml",
             "REGARCHNEG": root / "reg_arch_neg.toml", "REGNOTOK": root / "reg_notok.toml",
             "REGADAPTER": root / "reg_adapter_other.toml", "REGBADTOK": root / "reg_badtok.toml", "REGMISSING": root / "reg_missing.toml",
             "REGLAYERS3": root / "reg_layers3.toml",
             "BASE": _generations(root / "base.jsonl"), "POST": _generations(root / "post.jsonl"),
             "STRIDS": _generations(root / "strids.jsonl", answer_ids=["5", "6"])}
    assert main(["eap", "--model", str(root / "model"), "--input", str(root / "rows.jsonl"), "--out", str(root / "eap")]) == 0
    assert main(["eap", "--model", str(root / "model"), "--input", str(root / "rows.jsonl"), "--out",
                 str(root / "eap-block"), "--layout", "block"]) == 0
    assert main(["ablate", "--model", str(root / "model"), "--input", str(root / "rows.jsonl"), "--out", str(root / "abl"),
                 "--edges", "sample:8"]) == 0
    shutil.copytree(root / "abl", root / "abl-trunc")                                          # f05
    (root / "abl-trunc" / "ablation.json").write_text((root / "abl" / "ablation.json").read_text()[:40])
    (root / "pt_trunc" / "grpo").mkdir(parents=True)                                           # t02
    (root / "pt_trunc" / "grpo" / "heldout.json").write_text('{"summary": {"algo": "gr')
    (root / "pt_badsum" / "grpo").mkdir(parents=True)                                          # t03
    (root / "pt_badsum" / "grpo" / "train_summary.json").write_text("garbage")
    tiny_model("llama", dtype=torch.float32, seed=1).save_pretrained(root / "other")   # the same shapes, other weights
    assert main(["ablate", "--model", str(root / "other"), "--input", str(root / "rows.jsonl"), "--out",
                 str(root / "abl-other"), "--edges", "sample:8"]) == 0
    return {k: str(v) for k, v in names.items()}


@pytest.mark.parametrize("command, message", [pytest.param(c[1], c[2], id=c[0], marks=c[3:]) for c in CASES])
def test_bad_input_is_exit_2_with_one_line(world, tmp_path, capsys, monkeypatch, command: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)   # the audit's default reports/ folder, were it ever reached
    names = {**world, "T": str(tmp_path)}
    capsys.readouterr()
    status = main(shlex.split(command.format(**names)))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not PROGRESS.search(line)]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(**names) in lines[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "reports").exists()


def test_the_catalogue_covers_every_command_and_has_40_rows() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) >= 40
    from harness.cli import COMMANDS
    covered = {i.split("-")[0] for i in ids} | {"-".join(i.split("-")[:2]) for i in ids}
    assert set(COMMANDS) <= covered


@pytest.mark.parametrize("command, message", [
    ("report diff {NOTCLAIMS} {NOTCLAIMS}", "not a claims file"),
    ("fidelity --eap {EAP} --ablation {ABL} --top-k -1", "--top-k must be at least 1, got -1"),
])
def test_the_module_entry_point_prints_the_same_one_line(world, command: str, message: str) -> None:
    """`python -m harness` itself (harness/__main__.py), in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "harness", *shlex.split(command.format(**world))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and message in done.stderr


def test_an_empty_harness_cache_is_exit_2_before_any_work(world, tmp_path, capsys, monkeypatch) -> None:
    """Findings v02 and v05: HARNESS_CACHE='' made the working folder the cache, and the first run's
    clean removed the user's `.notes.tmp` there. Now: one line, exit 2, the folder untouched."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE", "")
    notes = tmp_path / "src" / ".notes.tmp"
    notes.parent.mkdir()
    notes.write_text("mine")
    status = main(["audit", "--registry", world["REGISTRY"], "--run-id", "v02"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: HARNESS_CACHE is set but empty"), err
    assert [p.name for p in tmp_path.iterdir()] == ["src"] and notes.read_text() == "mine"


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """Finding v04: `audit --list-settings | head -1` printed a BrokenPipeError traceback and exit 1."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(f"{shlex.quote(sys.executable)} -m harness audit --list-settings | head -1; "
                          "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("questions = ")


def test_check_refuses_a_dataset_other_than_the_one_answered(world, tmp_path, capsys) -> None:
    """Finding c01: regrading against another dataset with the same ids graded the answers against the
    wrong gold answers and overwrote the recorded revision."""
    from harness.cli.data import provenance_path
    from harness.data.problems import load_problems

    generations = Path(world["BASE"])
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(4)))
    answered = {"dataset": "sums.jsonl", "revision": "sha256:" + "a" * 64, "n": 4}
    provenance_path(generations).write_text(json.dumps({"data": answered}))
    try:
        status = main(["check", "--generations", str(generations), "--dataset", str(other), "--out",
                       str(tmp_path / "c.jsonl")])
    finally:
        provenance_path(generations).unlink()
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "answered sums.jsonl (revision sha256:aaaaaaaaaaaa" in err[0], err
    assert load_problems(str(other), n=4).revision != answered["revision"] and not (tmp_path / "c.jsonl").exists()


def test_a_cache_root_that_is_a_file_is_exit_2_before_any_work(world, tmp_path, capsys, monkeypatch) -> None:
    """Finding v01: HARNESS_CACHE naming a file failed inside every cell (FileExistsError)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cachefile"))
    status = main(["audit", "--registry", world["REGISTRY"], "--run-id", "v01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [f"error: HARNESS_CACHE {tmp_path / 'cachefile'} is a file, not a folder; "
                                   "give a path under a folder"], err


def test_a_cache_root_on_a_read_only_filesystem_is_exit_2_even_as_root(world, tmp_path) -> None:
    """Finding v03: HARNESS_CACHE on a read-only tmpfs, as root (whom folder permissions do not stop),
    failed in every cell with OSError 30. The audit runs inside a user and mount namespace (`unshare -rm`,
    root there) with a read-only tmpfs mounted over the cache's parent."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare")
    mount = tmp_path / "ro"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {mount}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user namespaces with mounts are not allowed here: {probe.stderr.strip()}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HARNESS_CACHE": str(mount / "cache")}
    audit = shlex.join([sys.executable, "-m", "harness", "audit", "--registry", world["REGISTRY"], "--run-id", "v03",
                        "--reports-dir", str(tmp_path / "r")])
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {mount} && {audit}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.strip() == (f"error: HARNESS_CACHE {mount / 'cache'}: {mount} is not writable; choose a "
                                   "folder you can write to"), done.stderr
    assert not (tmp_path / "r").exists()
