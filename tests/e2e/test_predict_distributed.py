"""`seglab predict` on several processes through Lightning's predict loop: 2 processes on one machine (Lightning's
launcher, `--devices 2`, gloo on the CPU) and 2 torchrun "nodes" on loopback, each writing every output exactly
once with an uneven count (9 inputs: shards of 5 and 4); a node lost mid-way is named, and `--skip-existing`
finishes what it left."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_multinode import free_port, processes_left, stop_all

from data_fixtures import TESTS_DIR
from predict_helpers import write_images, write_tiny_checkpoint
from seglab.cli import main
from training_helpers import register_tiny_model

COUNT = 9

# The real command line with the tiny model, recording which rank wrote which output (and its pid); with
# SLOW_RANK=<r>, that rank waits a second after each output so that it can be lost mid-way. Paths come from the
# environment: Lightning's launcher starts the second process with this script's own arguments.
WORKER = """\
import os, sys, time
from pathlib import Path
sys.path.insert(0, os.environ["SEGLAB_TESTS"])
from seglab.models import registry
from seglab.training import predict_loop
from training_helpers import TINY_MODEL, tiny_test

registry.MODEL_FACTORIES[TINY_MODEL] = tiny_test
record, write = Path(os.environ["RECORD_DIR"]), predict_loop.write_outputs


def recording_write(item, out, *args, **kwargs):
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    (record / f"pid_rank{rank}.txt").write_text(str(os.getpid()))
    result = write(item, out, *args, **kwargs)
    with open(record / f"writes_rank{rank}.txt", "a") as file:
        file.write(item.name.as_posix() + "\\n")
    if os.environ.get("SLOW_RANK") == str(rank):
        time.sleep(1)
    return result


predict_loop.write_outputs = recording_write
from seglab.cli import main
sys.exit(main())
"""


@pytest.fixture()
def setup(tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    write_images(tmp_path / "imgs", COUNT)
    (tmp_path / "worker.py").write_text(WORKER)
    return checkpoint, tmp_path / "imgs", tmp_path / "out"


def environment(folder: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGLAB_TESTS": str(TESTS_DIR), "RECORD_DIR": str(folder),
           "GLOO_SOCKET_IFNAME": "lo", **extra}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        env.pop(name, None)
    return env


def predict_args(checkpoint: Path, images: Path, out: Path) -> list[str]:
    return ["predict", str(checkpoint), str(images), "--out", str(out), "--device", "cpu", "--precision", "fp32",
            "--batch-size", "2", "--workers", "1", "--no-progress"]


def writes_by_rank(folder: Path) -> dict[int, list[str]]:
    return {int(path.stem.removeprefix("writes_rank")): path.read_text().split()
            for path in folder.glob("writes_rank*.txt")}


def assert_written_once(folder: Path, out: Path, checkpoint: Path, images: Path, monkeypatch) -> None:
    by_rank = writes_by_rank(folder)
    assert sorted(len(names) for names in by_rank.values()) == [4, 5], by_rank  # uneven shards, no padding
    counts = collections.Counter(name for names in by_rank.values() for name in names)
    assert counts == {f"img{i}": 1 for i in range(COUNT)}  # every input exactly once, on one rank
    register_tiny_model(monkeypatch)
    reference = folder / "reference"
    assert main(["predict", str(checkpoint), str(images), "--out", str(reference), "--no-progress",
                 "--precision", "fp32"]) == 0
    for index in range(COUNT):
        with Image.open(out / f"img{index}.png") as mask:
            assert mask.mode == "P"
            assert np.array_equal(np.array(mask), np.array(Image.open(reference / f"img{index}.png")))


def test_two_processes_on_one_machine_write_every_output_once(setup, tmp_path, monkeypatch):
    checkpoint, images, out = setup
    command = [sys.executable, str(tmp_path / "worker.py"), *predict_args(checkpoint, images, out), "--devices", "2"]
    done = subprocess.run(command, cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"predicted {COUNT} image(s)" in done.stdout
    assert "Starting with 2 processes" in done.stdout + done.stderr
    assert_written_once(tmp_path, out, checkpoint, images, monkeypatch)


def start_nodes(folder: Path, args: list[str], **extra: str) -> list[subprocess.Popen]:
    """Two torchrun nodes (node ranks 0 and 1, one process each) on 127.0.0.1 running the worker; each node's
    output goes to node<N>.txt in `folder`."""
    port = free_port()
    nodes = []
    for node in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                   "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                   str(folder / "worker.py"), *args]
        with open(folder / f"node{node}.txt", "w") as output:
            nodes.append(subprocess.Popen(command, cwd=folder, env=environment(folder, **extra), stdout=output,
                                          stderr=subprocess.STDOUT))
    return nodes


def test_two_torchrun_nodes_write_every_output_once(setup, tmp_path, monkeypatch):
    checkpoint, images, out = setup
    nodes = start_nodes(tmp_path, predict_args(checkpoint, images, out))  # geometry read from torchrun's variables
    try:
        codes = [process.wait(timeout=120) for process in nodes]
    finally:
        stop_all(nodes, tmp_path)
    outputs = [(tmp_path / f"node{node}.txt").read_text() for node in (0, 1)]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert f"predicted {COUNT} image(s)" in outputs[0]  # rank 0 reports for both
    assert "predicted" not in outputs[1]
    assert_written_once(tmp_path, out, checkpoint, images, monkeypatch)


def test_a_lost_node_is_named_and_skip_existing_finishes_its_share(setup, tmp_path, monkeypatch, capsys):
    checkpoint, images, out = setup
    nodes = start_nodes(tmp_path, [*predict_args(checkpoint, images, out), "--ddp-timeout-s", "10"], SLOW_RANK="1")
    try:
        record, deadline = tmp_path / "writes_rank1.txt", time.monotonic() + 90
        while not record.is_file() and time.monotonic() < deadline and nodes[0].poll() is None:
            time.sleep(0.05)
        assert record.is_file(), (tmp_path / "node1.txt").read_text()[-3000:]
        lost_at = time.monotonic()
        os.kill(int((tmp_path / "pid_rank1.txt").read_text()), signal.SIGKILL)  # node 1 lost after one output
        code = nodes[0].wait(timeout=60)
        detected_s = time.monotonic() - lost_at
    finally:
        stop_all(nodes, tmp_path)
    output = (tmp_path / "node0.txt").read_text()
    assert code != 0
    assert "seglab: error: rank 0 (node 0) lost rank 1 (node 1): " in output, output[-3000:]
    assert "--skip-existing" in output
    assert detected_s < 30
    assert not processes_left(tmp_path)
    written = {path.name for path in out.glob("img*.png")}
    assert len(writes_by_rank(tmp_path)[0]) == 5 and len(written) < COUNT
    register_tiny_model(monkeypatch)
    assert main(["predict", str(checkpoint), str(images), "--out", str(out), "--skip-existing", "--no-progress",
                 "--precision", "fp32"]) == 0
    assert f"predicted {COUNT - len(written)} image(s)" in capsys.readouterr().out
    assert len(list(out.glob("img*.png"))) == COUNT
