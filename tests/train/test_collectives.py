"""all_reduce_values: the few numbers workers agree on (epoch metrics, the time budget).

Two gloo ranks in a subprocess (a process group must not leak into the test session); the
NCCL half, which needs CUDA tensors, is in tests/gpu/test_gpu_path.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from single_rank import free_port

from ttds.train.collectives import all_reduce_values, collective_device

TWO_RANKS = r"""
import json, os, sys
import torch.distributed as dist
import torch.multiprocessing as mp

def run(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from ttds.train.collectives import all_reduce_values, collective_device
    res = {"sum": all_reduce_values([1.0 + rank, 10.0 * rank]), "max": all_reduce_values([5.0 - rank, rank], "max"),
           "device": str(collective_device())}
    dist.destroy_process_group()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(res, f)

if __name__ == "__main__":
    mp.spawn(run, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
"""


def test_without_a_process_group_the_values_come_back():
    assert all_reduce_values([1, 2.5]) == [1.0, 2.5]
    assert str(collective_device()) == "cpu"
    with pytest.raises(ValueError, match="'sum' or 'max'"):
        all_reduce_values([1.0], "mean")


@pytest.mark.timeout(120)
def test_two_gloo_ranks_sum_and_max(tmp_path):
    port = free_port()
    script, out = tmp_path / "two_ranks.py", tmp_path / "out.json"
    script.write_text(TWO_RANKS)
    r = subprocess.run([sys.executable, str(script), str(port), str(out)], capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res == {"sum": [3.0, 10.0], "max": [5.0, 1.0], "device": "cpu"}, res
