"""How an audit's work is split: `--shard i/N` deals the grid's pair groups, pair leases let processes
on one cache take different pairs, and each xdist worker is given its own GPU."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.audit.grid import PAIRLESS_GROUP, Families, RunGrid, pair_lease, parse_shard
from harness.audit.store import CacheStore, Ledger
from harness.errors import UserError
from harness.models.registry import load_registry
from harness.pytest_plugin import bind_worker_gpu, deal_gpu


@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3))])
def test_a_shard_is_i_of_n(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "-1/2", "1/0", ""])
def test_a_shard_outside_1_to_n_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="give i/N with 1 <= i <= N"):
        parse_shard(text)


def test_shards_deal_every_pair_group_to_exactly_one_shard() -> None:
    grid = RunGrid.build(load_registry())
    groups = grid.groups()
    assert groups == [*grid.pairs, PAIRLESS_GROUP] and len(grid.pairs) >= 4
    for shards in (1, 2, 3, len(groups)):
        dealt = {i: [g for g in groups if grid.shard_of(g, shards) == i] for i in range(1, shards + 1)}
        assert sorted(g for part in dealt.values() for g in part) == sorted(groups)
        assert all(dealt.values())                                      # no shard is left empty
        assert max(map(len, dealt.values())) - min(map(len, dealt.values())) <= 1


def _hold_lease(root: str, ready, release) -> None:
    store = CacheStore(Ledger(), Path(root))
    with store.lease("pair-x") as held:
        assert held
        ready.set()
        release.wait(30)


def test_a_lease_held_by_another_process_is_skipped_then_waited_for(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    other = context.Process(target=_hold_lease, args=(str(tmp_path), ready, release))
    other.start()
    store = CacheStore(Ledger(), tmp_path)
    try:
        assert ready.wait(60)
        with store.lease("pair-x", wait=False) as held:
            assert not held
        with store.lease("pair-y", wait=False) as held:   # another pair's lease is free
            assert held
    finally:
        release.set()
        other.join(60)
    with store.lease("pair-x", wait=False) as held:
        assert held


class RecordingPipeline:
    """Stands in for AuditPipeline in Families.prepare: records the stages asked for, each pair once."""

    def __init__(self, store: CacheStore) -> None:
        self.store, self.prepared = store, []
        self.config = SimpleNamespace(robustness_estimator="exact")

    def prepare(self, pair, datasets, points, *, causal, estimators, interventions) -> None:
        self.prepared.append((pair, tuple(datasets), len(points), causal, interventions))


def test_families_prepare_the_pairs_no_other_process_holds_first(tmp_path: Path) -> None:
    grid = RunGrid.build(load_registry())
    busy = grid.pairs[1]
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    pipeline = RecordingPipeline(CacheStore(Ledger(), tmp_path))
    other = context.Process(target=_hold_named_lease, args=(str(tmp_path), pair_lease(grid.registry[busy]), ready,
                                                            release))
    other.start()
    try:
        assert ready.wait(60)
        families = Families(pipeline, grid, ("C1", "C8", "C9"))
        first = grid.pairs[-1]
        for pair in [first, *(p for p in grid.pairs if p not in (first, busy))]:
            assert families.prepare(pair, wait=False)
        assert not families.prepare(busy, wait=False)                  # held elsewhere: skipped, not waited on
        assert [p for p, *_ in pipeline.prepared] == [first, *(p for p in grid.pairs if p not in (first, busy))]
    finally:
        release.set()
        other.join(60)
    families.prepare_pairs(first=first)                                # the busy pair, once its lease is free
    assert [p for p, *_ in pipeline.prepared].count(busy) == 1 and len(pipeline.prepared) == len(grid.pairs)
    for pair, datasets, points, causal, interventions in pipeline.prepared:   # C8 and C9 read every pair
        assert datasets == tuple(grid.registry[pair].datasets) and causal
        assert points == len(datasets) * len(grid.alphas) * len(grid.token_modes)
        assert not interventions   # no CB claim in this session


def _hold_named_lease(root: str, name: str, ready, release) -> None:
    store = CacheStore(Ledger(), Path(root))
    with store.lease(name):
        ready.set()
        release.wait(30)


def test_each_xdist_worker_is_given_one_gpu_round_robin(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    config = SimpleNamespace(getoption=lambda name: "cuda")
    given = {}
    for worker in ("gw0", "gw1", "gw2"):
        node = SimpleNamespace(config=config, workerinput={"workerid": worker})
        deal_gpu(node)
        given[worker] = node.workerinput["harness_gpu"]
    assert given == {"gw0": "3", "gw1": "5", "gw2": "3"}

    worker = SimpleNamespace(workerinput={"harness_gpu": "5"}, getoption=lambda name: "cuda")
    assert bind_worker_gpu(worker) == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    pinned = SimpleNamespace(workerinput={"harness_gpu": "5"}, getoption=lambda name: "cuda:1")
    with pytest.raises(UserError, match="each xdist worker sees one GPU"):
        bind_worker_gpu(pinned)


def test_without_gpus_no_worker_is_bound(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    node = SimpleNamespace(config=SimpleNamespace(getoption=lambda name: "cpu"), workerinput={"workerid": "gw0"})
    deal_gpu(node)
    assert "harness_gpu" not in node.workerinput
    assert bind_worker_gpu(SimpleNamespace(workerinput={"workerid": "gw0"}, getoption=lambda name: "cpu")) is None


def test_a_session_judging_only_accuracy_prepares_answers_only(tmp_path: Path) -> None:
    grid = RunGrid.build(load_registry())
    pipeline = RecordingPipeline(CacheStore(Ledger(), tmp_path))
    Families(pipeline, grid, ("C9",)).prepare_pairs()
    assert [(p, d, n, c, i) for p, d, n, c, i in pipeline.prepared] == [
        (p, tuple(grid.registry[p].datasets), 0, False, False) for p in grid.pairs]
