"""Many machines, rehearsed on one: two torchrun "nodes" (CPU, gloo, every process on 127.0.0.1) train one run;
a node killed mid-epoch; SLURM's requeue signal; uneven shards; sync_batchnorm's rule.

Each node is `python -m torch.distributed.run --nnodes 2 --nproc-per-node 1 --node-rank N` running the real
command line (`seglab train CONFIG --set num_nodes=2 strategy=ddp ...`) through a small worker script that
registers the tiny model and records what each rank trained on, validated and saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_training_faults import FAULT_RUN, checkpoint_files, run_seglab_here

import seglab
from data_fixtures import TESTS_DIR
from seglab.data import ShapesDataset
from seglab.errors import ConfigError
from seglab.evaluation.scores import scores_from_confusion
from seglab.training.config import make_config
from seglab.training.datamodule import describe_training_epoch
from seglab.training.distributed import run_sync_batchnorm
from seglab.training.pause_points import MARKER_VARIABLE, PAUSE_AT_VARIABLE
from training_helpers import TINY_MODEL, logged_metrics, register_tiny_model, score_as_the_ranks

TESTS = TESTS_DIR

# 15 training images on 2 processes (shards of 8, one image repeated) and 5 validation images (shards of 3 and 2).
RUN = {"dataset": "shapes", "image_size": 32, "train_length": 15, "val_length": 5, "batch_size": 2,
       "model": TINY_MODEL, "precision": "32-true", "progress_bar": False, "max_epochs": 2, "logger": "csv",
       "log_every_n_steps": 1, "test_after_training": False, "name": "two"}
STEPS_PER_EPOCH = 4  # 8 images per process in batches of 2
TWO_NODES = ["num_nodes=2", "strategy=ddp", "accelerator=cpu", "devices=1"]

WORKER = """\
import hashlib, json, os, sys
from pathlib import Path

sys.path.insert(0, sys.argv.pop(1))  # the tests folder, for the tiny model

import torch
from lightning.pytorch import Callback

from seglab.cli import main
from seglab.models import registry
from seglab.training import checkpoints, run
from training_helpers import TINY_MODEL, tiny_test

registry.MODEL_FACTORIES[TINY_MODEL] = tiny_test
out, rank = Path(os.environ["RECORD_DIR"]), int(os.environ["RANK"])
(out / f"pid_rank{rank}.txt").write_text(str(os.getpid()))  # torchrun gives its worker a session of its own
save, build = checkpoints.save_atomically, run.build_trainer


def recording_save(checkpoint, path):
    with open(out / f"saves_rank{rank}.txt", "a") as file:
        file.write(Path(path).name + "\\n")
    save(checkpoint, path)


def digest(image):
    return hashlib.sha256(image.cpu().contiguous().numpy().tobytes()).hexdigest()


class Record(Callback):
    def on_train_start(self, trainer, pl_module):
        # The tiny model's BatchNorm: its input and running statistics in the first step.
        pl_module.model[1].register_forward_hook(lambda layer, inputs, output: setattr(self, "bn_input", inputs[0]))

    def on_train_epoch_start(self, trainer, pl_module):
        self.train = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train += [digest(image) for image in batch[0]]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            norm = pl_module.model[1]
            torch.save({"input": self.bn_input.detach(), "mean": norm.running_mean.clone(),
                        "var": norm.running_var.clone(), "layer": type(norm).__name__}, out / f"bn_rank{rank}.pt")

    def on_validation_epoch_start(self, trainer, pl_module):
        self.val = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val += [digest(image) for image in batch[0]]

    def on_validation_epoch_end(self, trainer, pl_module):
        self.local = pl_module.val_metrics.confusion.confmat.tolist()  # before the module logs and resets it

    def on_validation_end(self, trainer, pl_module):
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        row.update(world_size=trainer.world_size, train=self.train, val=self.val, local=self.local)
        with open(out / f"epochs_rank{rank}.jsonl", "a") as file:
            file.write(json.dumps(row) + "\\n")


checkpoints.save_atomically = recording_save
run.build_trainer = lambda *args, extra_callbacks=(), **kw: build(*args, extra_callbacks=[*extra_callbacks, Record()],
                                                                   **kw)
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_nodes(folder: Path, args: list[str], pause_node_1: str | None = None,
                pause_node_0: str | None = None) -> list[subprocess.Popen]:
    """Two torchrun nodes (node ranks 0 and 1, one process each) running `seglab ARGS` with the recording worker;
    each node's output goes to node<N>.txt in `folder`. `pause_node_<N>` pauses node N's process at that moment
    (one of them at a time: both report to the same marker file)."""
    worker = folder / "worker.py"
    worker.write_text(WORKER)
    port = free_port()
    nodes = []
    for node in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RECORD_DIR": str(folder), "GLOO_SOCKET_IFNAME": "lo"}
        for name in (PAUSE_AT_VARIABLE, "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        pause = (pause_node_0, pause_node_1)[node]
        if pause:
            env.update({PAUSE_AT_VARIABLE: pause, MARKER_VARIABLE: str(folder / "paused")})
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                   str(worker), str(TESTS), *args]
        with open(folder / f"node{node}.txt", "w") as output:
            nodes.append(subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT))
    return nodes


def stop_all(processes: list[subprocess.Popen], folder: Path) -> None:
    """Kills what is left of the processes started here: the torchrun agents (or seglab itself) and the workers
    whose pids the worker script recorded in `folder` (torchrun starts each worker in a session of its own)."""
    for process in processes:
        process.kill()
        process.wait()
    for record in folder.glob("pid_rank*.txt"):
        pid = int(record.read_text())
        with contextlib.suppress(OSError):  # gone already; and a reused pid is not ours to kill
            if str(folder / "worker.py") in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)


def write_config(folder: Path, **changes) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({**RUN, "runs_dir": str(folder / "runs"), **changes}))
    return path


def epochs_of(folder: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (folder / f"epochs_rank{rank}.jsonl").read_text().splitlines()]


def digests(dataset) -> list[str]:
    return [hashlib.sha256(dataset[i][0].numpy().tobytes()).hexdigest() for i in range(len(dataset))]


def test_two_torchrun_nodes_train_one_run_scored_as_one_process_and_resumed_on_one(tmp_path, monkeypatch):
    nodes = start_nodes(tmp_path, ["train", str(write_config(tmp_path)), "--set", *TWO_NODES])
    try:
        codes = [process.wait(timeout=120) for process in nodes]
    finally:
        stop_all(nodes, tmp_path)
    outputs = [(tmp_path / f"node{node}.txt").read_text() for node in (0, 1)]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    # One run folder, one world of two processes, checkpoints written by rank 0 only.
    assert [path.name for path in (tmp_path / "runs").iterdir()] == ["two"]
    run_dir = tmp_path / "runs" / "two"
    ranks = [epochs_of(tmp_path, rank) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2 and all(row["world_size"] == 2 for row in ranks[0] + ranks[1])
    assert {"best.ckpt", "last.ckpt"} <= set((tmp_path / "saves_rank0.txt").read_text().split())
    assert not (tmp_path / "saves_rank1.txt").exists()
    # sync_batchnorm: auto is on here (2 processes, 2 images each): after the first step both ranks hold the
    # BatchNorm statistics of all 4 images.
    assert_batchnorm_statistics(tmp_path, synchronised=True)
    # Uneven training shards: 15 images on 2 processes, 8 each; said in a log line; every image trained on in
    # every epoch, one of them twice (DistributedSampler's padding), none left out.
    assert "15 images over 2 processes, 8 each (1 repeated to even the shards" in outputs[0]
    assert "no image left out" in outputs[0]
    train = set(digests(ShapesDataset("train", size=32, length=15)))
    val_set = ShapesDataset("val", size=32, length=5)
    for mine, theirs in zip(*ranks, strict=True):
        assert len(mine["train"]) == len(theirs["train"]) == 8
        assert set(mine["train"]) | set(theirs["train"]) == train
        # Validation: shards of 3 and 2, each image scored on exactly one rank, every pixel counted once.
        assert sorted([len(mine["val"]), len(theirs["val"])]) == [2, 3]
        assert sorted(mine["val"] + theirs["val"]) == sorted(digests(val_set))
        assert int(torch.tensor(mine["local"]).sum() + torch.tensor(theirs["local"]).sum()) == 5 * 32 * 32
    # The saved model scored in one process gives the scores the two nodes logged (rank 0 validated images 0, 2
    # and 4 in batches [0, 2], [4]; rank 1 images 1 and 3).
    register_tiny_model(monkeypatch)
    confusion, _, _ = score_as_the_ranks(run_dir / "checkpoints" / "last.ckpt", val_set, [[0, 2], [4], [1, 3]])
    assert torch.equal(confusion, torch.tensor(ranks[0][-1]["local"]) + torch.tensor(ranks[1][-1]["local"]))
    one_process = scores_from_confusion(confusion)
    logged = logged_metrics(run_dir)
    assert logged[-1]["val_miou"] == pytest.approx(float(one_process["miou"]), abs=1e-6)
    assert logged[-1]["val_pixel_accuracy"] == pytest.approx(float(one_process["pixel_accuracy"]), abs=1e-6)

    # --resume on one process continues where the two nodes stopped: epoch 2 alone, 7 steps of 2 of 15 images.
    run_seglab_here(["train", "--resume", str(run_dir), "--set", "max_epochs=3", "num_nodes=1", "strategy=auto"])
    resumed = logged_metrics(run_dir)
    assert resumed[:2] == logged and [row["epoch"] for row in resumed] == [0, 1, 2]
    assert resumed[2]["step"] == 2 * STEPS_PER_EPOCH + 7
    assert checkpoint_files(run_dir)["last.ckpt"]["epoch"] == 2


def wait_for(path: Path, nodes: list[subprocess.Popen], log: Path, timeout: float = 90) -> str:
    """Waits for the pause marker `path`; returns its text ("<moment>@<n> pid <pid>")."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if any(process.poll() is not None for process in nodes) or time.monotonic() > deadline:
            stop_all(nodes, path.parent)
            pytest.fail(f"no pause at the moment asked for:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.1)  # the marker's text is written in one call, but let it land
    return path.read_text()


@pytest.mark.parametrize("fault", ["kill-9", "silent"])
def test_a_lost_node_stops_the_other_naming_it_and_the_run_resumes_from_last_ckpt(tmp_path, monkeypatch, fault):
    # Node 1's process stops in epoch 1's second step (its 6th), between forward and backward: node 0 waits for it
    # in the gradients' all-reduce. "kill-9": it dies there (the peer's socket closes); "silent": it just stays
    # there (a hung or cut-off node), which only the collective timeout can notice.
    timeout_s = 3
    config = write_config(tmp_path, ddp_timeout_s=timeout_s)
    nodes = start_nodes(tmp_path, ["train", str(config), "--set", *TWO_NODES], pause_node_1="train_step@6")
    try:
        pid = int(wait_for(tmp_path / "paused", nodes, tmp_path / "node0.txt").split("pid")[1])
        lost_at = time.monotonic()
        if fault == "kill-9":
            os.kill(pid, signal.SIGKILL)
        code = nodes[0].wait(timeout=60)
        detected_s = time.monotonic() - lost_at
    finally:
        stop_all(nodes, tmp_path)
    output = (tmp_path / "node0.txt").read_text()
    print(f"{fault}: node 0 exited {detected_s:.1f} s after node 1 was lost (ddp_timeout_s={timeout_s})")
    assert code != 0
    assert "seglab: error: rank 0 (node 0) lost rank 1 (node 1): " in output, output[-3000:]
    assert "Training stops on every process; resume from " in output
    # Bounded: at once when the peer's socket closes; one timeout for the collective plus one for the monitored
    # barrier that names the silent rank, and start-up/teardown slack.
    assert detected_s < (10 if fault == "kill-9" else 2 * timeout_s + 10)
    run_dir = tmp_path / "runs" / "two"
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == STEPS_PER_EPOCH  # epoch 0's
    register_tiny_model(monkeypatch)
    run_seglab_here(["train", "--resume", str(run_dir), "--set", "num_nodes=1", "strategy=auto"])
    assert [row["epoch"] for row in logged_metrics(run_dir)] == [0, 1]
    assert checkpoint_files(run_dir)["last.ckpt"]["epoch"] == 1


def test_losing_rank_0_stops_rank_1_naming_it_and_the_run_resumes_from_last_ckpt(tmp_path, monkeypatch):
    # Node 0's process (rank 0: the one that writes checkpoints) dies in epoch 1's second step, between forward
    # and backward; rank 1 waits for it in the gradients' all-reduce.
    config = write_config(tmp_path, ddp_timeout_s=3)
    nodes = start_nodes(tmp_path, ["train", str(config), "--set", *TWO_NODES], pause_node_0="train_step@6")
    try:
        pid = int(wait_for(tmp_path / "paused", nodes, tmp_path / "node1.txt").split("pid")[1])
        lost_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        codes = [process.wait(timeout=60) for process in nodes]
        detected_s = time.monotonic() - lost_at
    finally:
        stop_all(nodes, tmp_path)
    output = (tmp_path / "node1.txt").read_text()
    print(f"rank 0 lost: both nodes exited {detected_s:.1f} s later")
    assert codes[0] != 0 and codes[1] != 0
    assert "seglab: error: rank 1 (node 1) lost rank 0 (node 0): " in output, output[-3000:]
    assert "Training stops on every process; resume from " in output
    assert detected_s < 20
    assert not processes_left(tmp_path)
    run_dir = tmp_path / "runs" / "two"
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == STEPS_PER_EPOCH  # epoch 0's, whole
    register_tiny_model(monkeypatch)
    run_seglab_here(["train", "--resume", str(run_dir), "--set", "num_nodes=1", "strategy=auto"])
    assert [row["epoch"] for row in logged_metrics(run_dir)] == [0, 1]
    assert checkpoint_files(run_dir)["last.ckpt"]["epoch"] == 1


def processes_left(folder: Path) -> list[int]:
    """The ranks' processes (pids the worker script recorded in `folder`) that are still running."""
    alive = []
    for record in folder.glob("pid_rank*.txt"):
        pid = int(record.read_text())
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if status != "Z" and str(folder / "worker.py") in Path(f"/proc/{pid}/cmdline").read_bytes().decode(
                    errors="replace"):
                alive.append(pid)
    return alive


@pytest.mark.parametrize(("signum", "rank"), [(signal.SIGINT, 0), (signal.SIGTERM, 0), (signal.SIGINT, 1),
                                              (signal.SIGTERM, 1)], ids=["sigint-rank0", "sigterm-rank0",
                                                                         "sigint-rank1", "sigterm-rank1"])
def test_a_signal_to_one_rank_stops_every_process_with_a_loadable_last_ckpt_and_resume_finishes(
        tmp_path, monkeypatch, signum, rank):
    # The signalled rank stops in epoch 1's second step (its 6th), between forward and backward; the other waits
    # for it in the gradients' all-reduce. A real signal, to that rank's process alone.
    config = write_config(tmp_path, ddp_timeout_s=30)
    pause = {f"pause_node_{rank}": "train_step@6"}
    nodes = start_nodes(tmp_path, ["train", str(config), "--set", *TWO_NODES], **pause)
    try:
        pid = int(wait_for(tmp_path / "paused", nodes, tmp_path / f"node{rank}.txt").split("pid")[1])
        assert pid == int((tmp_path / f"pid_rank{rank}.txt").read_text())
        os.kill(pid, signum)
        codes = [process.wait(timeout=60) for process in nodes]
    finally:
        stop_all(nodes, tmp_path)
    outputs = [(tmp_path / f"node{node}.txt").read_text() for node in (0, 1)]
    assert all(code != 0 for code in codes), outputs
    assert not processes_left(tmp_path)  # every rank's process ended, none hangs in a collective
    for output in outputs:
        # torchrun's agent reports its worker's non-zero exit with a traceback of its own; none comes from seglab.
        assert 'File "' + str(Path(seglab.__file__).parent) not in output and "lost rank" not in output, output
    # The signalled rank ends with the signal's exit code; rank 0 says where it stopped and how to resume, and the
    # step that the signal interrupted was finished and saved.
    assert f"exitcode  : {128 + signum} (pid: {pid})" in outputs[rank], outputs[rank][-3000:]
    assert "training stopped by SIG" in outputs[0] and " in epoch 1 after step 6; saved " in outputs[0]
    assert f"Resume with: seglab train --resume {tmp_path / 'runs' / 'two'}" in outputs[0], outputs[0][-3000:]
    run_dir = tmp_path / "runs" / "two"
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == STEPS_PER_EPOCH + 2
    register_tiny_model(monkeypatch)
    run_seglab_here(["train", "--resume", str(run_dir), "--set", "num_nodes=1", "strategy=auto"])
    assert [row["epoch"] for row in logged_metrics(run_dir)] == [0, 1]
    assert checkpoint_files(run_dir)["last.ckpt"]["epoch"] == 1


FAKE_SCONTROL = """\
#!/bin/sh
echo "$@" >> "{calls}"
"""


def test_slurm_requeue_signal_saves_last_ckpt_at_the_step_and_requeues_the_job(tmp_path):
    # The SLURM environment of a one-task job, and an `scontrol` on PATH that records its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL.format(calls=calls))
    (bin_dir / "scontrol").chmod(stat.S_IRWXU)
    config = tmp_path / "slurm.yaml"
    config.write_text(yaml.safe_dump({**FAULT_RUN, "name": "slurm", "runs_dir": str(tmp_path / "runs")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           PAUSE_AT_VARIABLE: "train_step@3", MARKER_VARIABLE: str(tmp_path / "paused"),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "seglab", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
           "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    env.pop("SLURM_ARRAY_JOB_ID", None)
    with open(tmp_path / "out.txt", "w") as output:
        process = subprocess.Popen([sys.executable, str(TESTS / "training_helpers.py"), "train", str(config)],
                                   cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(tmp_path / "paused", [process], tmp_path / "out.txt")
        process.send_signal(signal.SIGUSR1)  # what `#SBATCH --signal=USR1@120` sends before the time limit
        code = process.wait(timeout=60)
    finally:
        stop_all([process], tmp_path)
    output = (tmp_path / "out.txt").read_text()
    assert code == 128 + signal.SIGUSR1, output[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "training stopped by SIGUSR1 in epoch 1 after step 3; saved " in output
    assert "SLURM job 4242 requeued. Resume with: seglab train --resume " in output
    run_dir = tmp_path / "runs" / "slurm"
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == 3  # the step the signal landed in
    # One resume point: Lightning's own handler (which saves hpc_ckpt_<n>.ckpt) was set aside.
    assert not list(run_dir.rglob("hpc_ckpt_*"))


def test_the_training_epoch_log_line_says_what_is_repeated_and_what_is_left_out():
    assert describe_training_epoch(15, 2, 3, True) == (
        "training epoch: 15 images over 2 processes, 8 each (1 repeated to even the shards, as DistributedSampler "
        "does); batches of 3: 2 per process; the last 2 of each process's shard are left out of each epoch "
        "(drop_last keeps batches full; the order is reshuffled every epoch, so a different few each time)")
    assert describe_training_epoch(16, 1, 4, True) == "training epoch: 16 images; batches of 4: 4, no image left out"


def assert_batchnorm_statistics(folder: Path, synchronised: bool) -> None:
    """After the first step, both ranks' BatchNorm running statistics are those of their 4 images together when
    `synchronised`, and each rank's own (so they differ) when not."""
    ranks = [torch.load(folder / f"bn_rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ranks[0]["layer"] == ("AllReducedBatchNorm" if synchronised else "BatchNorm2d")
    # BatchNorm's update from its initial (0, 1) with momentum 0.1.
    both = torch.cat([rank["input"] for rank in ranks])
    expected_mean, expected_var = 0.1 * both.mean((0, 2, 3)), 0.9 + 0.1 * both.var((0, 2, 3), unbiased=True)
    for rank in ranks:
        assert torch.allclose(rank["mean"], expected_mean, atol=1e-5) == synchronised
        assert torch.allclose(rank["var"], expected_var, atol=1e-5) == synchronised
    assert torch.allclose(ranks[0]["mean"], ranks[1]["mean"], atol=1e-5) == synchronised
    assert torch.allclose(ranks[0]["var"], ranks[1]["var"], atol=1e-5) == synchronised


def test_without_sync_batchnorm_each_rank_keeps_its_own_batchnorm_statistics(tmp_path):
    # The control for the two-node test, where sync_batchnorm: auto is on (2 processes, 2 images each) and the
    # same check finds the statistics of all 4 images on both ranks: without it the check fails.
    config = write_config(tmp_path, max_epochs=1, limit_train_batches=1, val_length=2, sync_batchnorm=False)
    nodes = start_nodes(tmp_path, ["train", str(config), "--set", *TWO_NODES])
    try:
        codes = [process.wait(timeout=120) for process in nodes]
    finally:
        stop_all(nodes, tmp_path)
    assert codes == [0, 0], (tmp_path / "node0.txt").read_text()[-3000:]
    assert_batchnorm_statistics(tmp_path, synchronised=False)


def test_sync_batchnorm_auto_is_on_for_small_per_process_batches(monkeypatch):
    import seglab.training.distributed as distributed

    def resolved(**values):
        return run_sync_batchnorm(make_config({"dataset": "shapes", "max_epochs": 1, **values}))

    assert resolved(batch_size=2, num_nodes=2, accelerator="cpu")
    assert resolved(batch_size=2, devices=2, accelerator="cpu")
    assert not resolved(batch_size=8, devices=2, accelerator="cpu")
    assert not resolved(batch_size=2, accelerator="cpu")
    monkeypatch.setattr(distributed, "uses_cuda", lambda config: True)
    monkeypatch.setattr(distributed.CUDAAccelerator, "auto_device_count", staticmethod(lambda: 4))
    monkeypatch.setattr(distributed.CUDAAccelerator, "parse_devices", staticmethod(lambda devices: list(
        range(devices)) if isinstance(devices, int) else devices))
    assert resolved(batch_size=4, devices=2)
    assert resolved(batch_size=4, devices=1, num_nodes=2)
    assert resolved(batch_size=4, devices="auto")
    assert not resolved(batch_size=8, devices=2)  # 8 images per process: its own statistics are good enough
    assert not resolved(batch_size=4, devices=1)  # one process: nothing to synchronise
    assert not resolved(batch_size=4, devices=2, sync_batchnorm=False)
    assert resolved(batch_size=16, devices=1, sync_batchnorm=True)
    with pytest.raises(ConfigError, match="must be true, false or auto"):
        resolved(sync_batchnorm="yes")
