"""Multi-process launches as a cluster runs them, on CPU: torchrun on one node, torchrun as two nodes, and SLURM
(srun's environment, two tasks). Lightning must detect each launcher, the shards must split over every rank
(nodes x devices, then workers), and every rank must run the same number of samples per epoch."""

import json
import os
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from talkinghead.datamodules.shard_format import expand_shards

CONFIGS = resources.files("talkinghead.lightning_configs")
TESTS = Path(__file__).parents[1]
EXAMPLES = TESTS.parent / "examples"
EPOCHS, SAMPLES_PER_EPOCH = 2, 8  # data/tiny.yaml's samples_per_epoch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fit_arguments(shards: Path, record: Path, num_nodes: int, devices: int) -> list[str]:
    """`talkinghead fit` of the probe model on the pairs DataModule, 2 workers per rank, CPU DDP."""
    return ["fit", "--config", str(CONFIGS / "data" / "pairs.yaml"), "--config", str(CONFIGS / "data" / "tiny.yaml"),
            "--model", "probe_module.ProbeModule", f"--model.record_dir={record}",
            f"--data.init_args.shards={shards}", "--data.init_args.image_size=16", "--data.init_args.num_workers=2",
            "--trainer.accelerator=cpu", "--trainer.strategy=ddp", f"--trainer.num_nodes={num_nodes}",
            f"--trainer.devices={devices}", f"--trainer.max_epochs={EPOCHS}", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={record}"]


def environment(**extra: str) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("SLURM_", "TORCHELASTIC_", "MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    return {**clean, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1", **extra}


def wait_all(processes: list[subprocess.Popen], timeout: int = 300) -> None:
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, (out or "")[-2000:] + (err or "")[-3000:]


def check_ranks(record: Path, shards: Path, environment_name: str, world_size: int, nodes: int) -> None:
    placements = sorted((json.loads(p.read_text()) for p in record.glob("placement-rank-*.json")),
                        key=lambda placement: placement["global_rank"])
    assert [p["global_rank"] for p in placements] == list(range(world_size))
    assert {p["environment"] for p in placements} == {environment_name}
    assert {p["world_size"] for p in placements} == {world_size}
    assert sorted({p["node_rank"] for p in placements}) == list(range(nodes))
    urls = expand_shards(str(shards))
    seen = {}
    for path in record.glob("rank-*-pid-*.txt"):
        rank = int(path.name.split("-")[1])
        lines = path.read_text().splitlines()
        assert len(lines) == EPOCHS * SAMPLES_PER_EPOCH, f"rank {rank}: {len(lines)} samples"  # equal epochs
        seen[rank] = {line.split("#")[0] for line in lines}
    assert sorted(seen) == list(range(world_size))
    for rank, shards_seen in seen.items():
        assert shards_seen <= set(urls[rank::world_size]), f"rank {rank} read another rank's shards"
    # with 2 workers per rank each worker owns some of the rank's shards: more than one shard per rank is read
    assert all(len(shards_seen) > 1 for shards_seen in seen.values())


@pytest.mark.slow
def test_torchrun_one_node_two_processes(random_shards, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "talkinghead", *fit_arguments(random_shards, tmp_path, 1, 2)]
    wait_all([subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)])
    check_ranks(tmp_path, random_shards, "TorchElasticEnvironment", world_size=2, nodes=1)


@pytest.mark.slow
def test_torchrun_two_nodes(random_shards, tmp_path):
    """Two torchrun "nodes" of one process each on this machine, as examples/torchrun.sh starts them."""
    port = free_port()
    processes = [subprocess.Popen(
        ["bash", str(EXAMPLES / "torchrun.sh"), *fit_arguments(random_shards, tmp_path, 2, 1)[1:]],
        env=environment(NNODES="2", NODE_RANK=str(node), GPUS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in range(2)]
    wait_all(processes)
    check_ranks(tmp_path, random_shards, "TorchElasticEnvironment", world_size=2, nodes=2)


@pytest.mark.slow
def test_slurm_two_tasks(random_shards, tmp_path):
    """The environment srun gives two tasks of one job on one node (examples/slurm.sbatch runs one task per GPU)."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "talkinghead-test", "SLURM_NTASKS": "2",
             "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODELIST": "localhost",
             "SLURM_NODEID": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "talkinghead", *fit_arguments(random_shards, tmp_path, 1, 2)],
        env=environment(**slurm, SLURM_PROCID=str(task), SLURM_LOCALID=str(task)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for task in range(2)]
    wait_all(processes)
    check_ranks(tmp_path, random_shards, "SLURMEnvironment", world_size=2, nodes=1)


def test_example_scripts_parse():
    for script in ("torchrun.sh", "slurm.sbatch"):
        assert subprocess.run(["bash", "-n", str(EXAMPLES / script)]).returncode == 0
