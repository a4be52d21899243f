"""All-reduce of a few Python numbers across Ray Train workers, on CPU (gloo) and GPU (NCCL).

Why a helper: NCCL reduces CUDA tensors only. A CPU tensor all-reduced in a NCCL group fails
with "No backend type associated with device type cpu" (seen on an H200: SASRec's epoch metrics),
while the same code passes every CPU test under gloo. So the tensor goes to the device the
process group's backend serves.
"""

from __future__ import annotations

import torch

from ttds.eval.metrics import MetricAccumulator


def collective_device() -> torch.device:
    """The device a tensor must be on for the current process group's collectives."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_values(values: list[float], op: str = "sum") -> list[float]:
    """Sum (op="sum") or max (op="max") of `values` over all ranks; the values themselves
    when no process group is running (a single local process)."""
    import torch.distributed as dist

    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', not {op!r}")
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def all_reduce_metrics(acc: MetricAccumulator) -> MetricAccumulator:
    """Ranking-metric sums merged over all ranks (sums merge exactly; means would not)."""
    keys = sorted(acc.sums)
    t = all_reduce_values([acc.count] + [acc.sums[k] for k in keys])
    return MetricAccumulator(ks=acc.ks, count=int(t[0]), sums=dict(zip(keys, t[1:])))
