"""Several training processes (DDP): the strategy with its collective timeout, when BatchNorm statistics are
synchronised, and a lost process (a dead or silent node) turned into a message that names it.

The processes are always Lightning's (its launcher, torchrun or SLURM); nothing here starts one.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import re
import time
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.accelerators.cuda import CUDAAccelerator
from lightning.pytorch.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from lightning.pytorch.strategies import DDPStrategy, Strategy
from torch.distributed.nn.functional import all_reduce

from seglab.errors import SeglabError
from seglab.training.config import TrainConfig
from seglab.training.hardware import uses_cuda

# Below this many images per process, one process's batch statistics are noisy estimates of the data's, and
# BatchNorm trains and evaluates on different statistics (DeepLab's and torchvision's recipes sync below 8-16).
SYNC_BATCHNORM_BELOW = 8


class DestroyedAtExitDDP(DDPStrategy):
    """Lightning's `DDPStrategy` that destroys the process group at exit whatever the backend: Lightning does it
    for NCCL only. A gloo group left to the interpreter's finalisation can abort the process ("terminate called
    without an active exception", SIGABRT; pytorch/pytorch#190489), seen on a rank after its run had finished,
    and torchrun's agent on the other node then waits at its exit barrier."""

    def setup_distributed(self) -> None:
        super().setup_distributed()
        atexit.register(destroy_process_group)


def destroy_process_group() -> None:
    """Destroys this process's default group if there is one (a local step, no collective)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def lightning_strategy(config: TrainConfig) -> str | Strategy:
    """`config.strategy` for Lightning's Trainer: ddp and ddp_spawn as a `DDPStrategy` whose collectives give up
    after `ddp_timeout_s` (PyTorch's default, 30 minutes on gloo, leaves a lost node unnoticed that long)."""
    if config.strategy not in ("ddp", "ddp_spawn"):
        return config.strategy
    return DestroyedAtExitDDP(start_method="spawn" if config.strategy == "ddp_spawn" else "popen",
                              timeout=datetime.timedelta(seconds=config.ddp_timeout_s))


def process_count(config: TrainConfig) -> int:
    """How many training processes the config asks for: devices per node times nodes (one per CPU node)."""
    if uses_cuda(config):
        devices = CUDAAccelerator.auto_device_count() if config.devices == "auto" else len(
            CUDAAccelerator.parse_devices(config.devices) or [])
    else:
        devices = len(config.devices) if isinstance(config.devices, list) else (
            1 if config.devices == "auto" else int(config.devices))
    return config.num_nodes * devices


def run_sync_batchnorm(config: TrainConfig) -> bool:
    """`config.sync_batchnorm` made concrete: auto is on for more than one process with fewer than
    SYNC_BATCHNORM_BELOW images each."""
    if config.sync_batchnorm != "auto":
        return bool(config.sync_batchnorm)
    return config.batch_size < SYNC_BATCHNORM_BELOW and process_count(config) > 1


def layer_sync(config: TrainConfig) -> list[LayerSync]:
    """The Trainer plugin that synchronises BatchNorm, if the run does: Lightning's (PyTorch's SyncBatchNorm) on
    GPUs, `AllReducedBatchNorm` on CPUs, where SyncBatchNorm has no kernels."""
    if not run_sync_batchnorm(config):
        return []
    return [TorchSyncBatchNorm() if uses_cuda(config) else AllReducedBatchNormSync()]


class AllReducedBatchNorm(torch.nn.BatchNorm2d):
    """A BatchNorm2d whose training statistics are those of every process's batch together: per-channel sums and
    sums of squares all-reduced by `torch.distributed.nn` (differentiable, so the backward pass is synchronised
    too). SyncBatchNorm's arithmetic, for CPUs (gloo); outside DDP training it is a plain BatchNorm2d."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        distributed = torch.distributed
        if not (self.training and distributed.is_initialized() and distributed.get_world_size() > 1):
            return super().forward(images)
        channels, inputs = images.shape[1], images.float()  # sums in fp32 under bf16 autocast too
        local = torch.cat([inputs.sum((0, 2, 3)), (inputs * inputs).sum((0, 2, 3)),
                           inputs.new_full((1,), inputs.numel() / channels)])
        total = all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        variance = total[channels:2 * channels] / count - mean * mean
        if self.track_running_stats:
            # Tracked, so the buffers exist (torch types them optional, for track_running_stats=False).
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), momentum)
                unbiased = variance.detach() * count / (count - 1).clamp(min=1)  # as BatchNorm keeps it
                self.running_var.lerp_(unbiased, momentum)
        shape = (1, channels, 1, 1)
        normalised = (inputs - mean.view(shape)) * torch.rsqrt(variance.view(shape) + self.eps)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised.to(images.dtype)


class AllReducedBatchNormSync(LayerSync):
    """Lightning's layer-sync plugin for `AllReducedBatchNorm`. Each BatchNorm2d changes class in place: its
    parameters stay the same objects (the optimiser's) and the checkpoint's keys stay BatchNorm2d's."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._swap(model, torch.nn.BatchNorm2d, AllReducedBatchNorm)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._swap(model, AllReducedBatchNorm, torch.nn.BatchNorm2d)

    @staticmethod
    def _swap(model: torch.nn.Module, old: type, new: type) -> torch.nn.Module:
        for module in model.modules():
            if type(module) is old:
                module.__class__ = new
        return model


class LostProcessError(SeglabError):
    """Another training process died or stopped answering: this one stops too, and says which and how to resume."""


@contextlib.contextmanager
def lost_processes_named(trainer: pl.Trainer, run_dir: Path, timeout_s: float, *,
                         advice: str | None = None) -> Iterator[None]:
    """Runs `trainer.fit` (the body); a collective that failed because another process is gone becomes a
    `LostProcessError` naming that process's rank and node, instead of the backend's traceback. `advice`: what to
    do next, instead of resuming training from `run_dir` (`seglab predict` passes its own)."""
    try:
        yield
    except Exception as error:
        if trainer.world_size <= 1 or not _is_lost_peer(error):
            raise
        lost = _unanswering_ranks(trainer, timeout_s)
        per_node = max(1, trainer.world_size // max(1, trainer.num_nodes))
        who = (", ".join(f"rank {rank} (node {rank // per_node})" for rank in lost) if lost
               else "another process (it could not be told which)")
        last = run_dir / "checkpoints" / "last.ckpt"
        advice = advice or (f"Training stops on every process; resume from {last} with: seglab train --resume "
                            f"{run_dir}")
        raise LostProcessError(f"rank {trainer.global_rank} (node {trainer.node_rank}) lost {who}: {_cause(error)}. "
                               f"{advice}") from None


def _is_lost_peer(error: BaseException) -> bool:
    # gloo reports a dead peer as "Connection closed by peer"/"Connection reset" and a silent one as "Timed out";
    # NCCL's watchdog ends the process itself after the timeout, without reaching Python.
    text = str(error)
    return isinstance(error, torch.distributed.DistError) or any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "Timed out waiting"))


def _unanswering_ranks(trainer: pl.Trainer, timeout_s: float) -> list[int]:
    """The ranks that do not answer a point-to-point probe within `timeout_s`: rank 0 hears from every other rank
    (gloo, the CPU backend, fails at once for a dead one, after the timeout for a silent one); the others only
    tell whether rank 0 is the one gone. Empty when the backend cannot tell (NCCL) or everyone answered.

    (Not torch's monitored_barrier: it raises the first broken connection's error without saying whose.)"""
    distributed = torch.distributed
    if not distributed.is_initialized() or distributed.get_backend() != "gloo":
        return []
    deadline = time.monotonic() + timeout_s
    if trainer.global_rank != 0:
        try:
            sent = distributed.isend(torch.zeros(1), dst=0)
            assert sent is not None  # None only for a rank outside the default group
            sent.wait(datetime.timedelta(seconds=timeout_s))
        except Exception:
            return [0]
        return []
    lost = []
    for rank in range(1, trainer.world_size):
        try:
            probe = distributed.irecv(torch.zeros(1), src=rank)
            assert probe is not None  # None only for a rank outside the default group
            probe.wait(datetime.timedelta(seconds=max(0.1, deadline - time.monotonic())))
        except Exception:
            lost.append(rank)
    return lost


def _cause(error: BaseException) -> str:
    """The backend's reason without its source location and advice: "Connection closed by peer [host]:port"."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else type(error).__name__
    return text.split(". ")[0].rstrip(".")
