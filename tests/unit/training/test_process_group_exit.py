"""seglab's DDP strategy destroys the process group at exit for every backend (Lightning does it for NCCL only): a
gloo group left to the interpreter's finalisation aborted a rank after its run (SIGABRT) and held the other node."""

from __future__ import annotations

import atexit

import torch
from lightning.pytorch.strategies import DDPStrategy

from seglab.training import make_config
from seglab.training.distributed import DestroyedAtExitDDP, destroy_process_group, lightning_strategy


def test_the_ddp_strategy_registers_the_groups_destruction_at_exit(monkeypatch):
    strategy = lightning_strategy(make_config({"dataset": "shapes", "strategy": "ddp", "accelerator": "cpu"}))
    assert isinstance(strategy, DestroyedAtExitDDP)
    registered = []
    monkeypatch.setattr(DDPStrategy, "setup_distributed", lambda self: None)
    monkeypatch.setattr(atexit, "register", registered.append)
    strategy.setup_distributed()
    assert registered == [destroy_process_group]


def test_destroying_the_group_ends_a_gloo_world_and_is_a_no_op_without_one(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert torch.distributed.is_initialized()
    destroy_process_group()
    assert not torch.distributed.is_initialized()
    destroy_process_group()
