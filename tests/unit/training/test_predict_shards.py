"""The distributed prediction's pure parts: shards without padding, and the process geometry read from torchrun's
and SLURM's variables."""

from __future__ import annotations

import collections

import pytest

from seglab.training.predict_loop import ShardSampler, launch_geometry


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("length", [0, 1, 5, 9, 11])
def test_every_index_is_on_exactly_one_rank_and_shards_differ_by_one_at_most(length, world):
    shards = [list(ShardSampler(length, rank, world)) for rank in range(world)]
    assert collections.Counter(i for shard in shards for i in shard) == dict.fromkeys(range(length), 1)
    assert [len(ShardSampler(length, rank, world)) for rank in range(world)] == [len(shard) for shard in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_the_geometry_comes_from_torchrun_or_slurm_unless_given(monkeypatch):
    for name in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES",
                 "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert launch_geometry(None, None) == (1, 1)
    assert launch_geometry(2, 3) == (2, 3)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    monkeypatch.setenv("SLURM_NNODES", "2")
    assert launch_geometry(None, None) == (4, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "6")
    assert launch_geometry(None, None) == (2, 3)  # torchrun's own variables come first
