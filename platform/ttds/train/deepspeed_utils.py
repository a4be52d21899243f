"""DeepSpeed configuration and engine setup that work on CPU (gloo) and GPU alike.

On CPU we pass our own torch optimizer: DeepSpeed's own "AdamW" without `torch_adam`
compiles a kernel for minutes. Ray Train has already created the process group, so
DeepSpeed joins it instead of starting one.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def deepspeed_config(stage: int, micro_batch: int, world_size: int, bf16: bool = False, offload: bool = False, grad_clip: float = 1.0,
                     autocast: bool = False) -> dict:
    """The DeepSpeed config dict. `offload` (ZeRO-2/3 only) moves optimizer state to CPU memory,
    and under ZeRO-3 the parameters too: for backbones whose states do not fit one GPU.

    `autocast`: fp32 master weights, forward in bf16 under torch autocast, configured in
    DeepSpeed's `torch_autocast` section. An autocast context opened around `engine(...)` is
    not enough: the engine switches autocast OFF inside its forward unless this section
    enables it (seen on an H200: DeepSpeed warned and the model ran in fp32)."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, not {stage}")
    zero: dict = {"stage": stage}
    extra: dict = {}
    if offload and stage >= 2:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        # our torch AdamW then steps the offloaded fp32 partition on the CPU; DeepSpeed refuses
        # a client optimizer with offload unless told (its CPUAdam is faster, but is a kernel
        # compiled on first use, minutes per node). Measured: without this, offload=True crashed.
        extra["zero_force_ds_cpu_optimizer"] = False
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "train_batch_size": micro_batch * world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        **({"torch_autocast": {"enabled": True, "dtype": "bfloat16"}} if autocast else {}),
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        **extra,
    }


class TorchEngine:
    """The part of DeepSpeed's engine the trainers use (call, backward, step, optimizer, device,
    module), in plain torch: AdamW with the same global-norm clipping DeepSpeed applies.

    Why: on one CPU worker ZeRO has nothing to partition and nothing to reduce, yet the engine
    still copies every gradient into its flat buffers and back on every step (issue 27's
    profile measures it against this path)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float = 1.0):
        self.module, self.optimizer, self.grad_clip = model, optimizer, grad_clip
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.device = next(model.parameters()).device

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def initialize(
    model: torch.nn.Module,
    lr: float,
    stage: int,
    micro_batch: int,
    bf16: bool = False,
    offload: bool = False,
    weight_decay: float = 0.0,
    param_groups: list[dict] | None = None,
    autocast: bool = False,
    torch_when_alone: bool = False,
):
    """Wrap `model` in a DeepSpeed engine inside a Ray Train worker; returns the engine.

    `param_groups` (torch optimizer groups) lets a caller give some parameters their own
    learning rate, e.g. codebooks that must move faster than the MLPs around them.
    `torch_when_alone`: one worker on CPU (no bf16, no offload) gets a `TorchEngine` instead,
    the same AdamW and clipping without ZeRO's per-step copies.
    """
    import torch.distributed as dist

    os.environ.setdefault("LOCAL_RANK", "0")
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch_when_alone and world == 1 and not torch.cuda.is_available() and not (bf16 or offload or autocast):
        params = [p for p in model.parameters() if p.requires_grad]
        # fused: torch's one-kernel AdamW, 2.2x faster than the default multi-tensor one on 3.6M
        # CPU parameters (measured; the step was 18% of a Scientific epoch in the profile)
        return TorchEngine(model, torch.optim.AdamW(param_groups or params, lr=lr, weight_decay=weight_decay, fused=True), grad_clip=1.0)
    import deepspeed

    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl", auto_mpi_discovery=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups or params, lr=lr, weight_decay=weight_decay)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=opt,
        config=deepspeed_config(stage, micro_batch, world, bf16=bf16, offload=offload, autocast=autocast, grad_clip=1.0),
    )
    return engine


@contextmanager
def gathered(params, modifier_rank: int | None = None):
    """Full parameters inside the block, also under ZeRO-3 (a no-op for replicated ones)."""
    import deepspeed

    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


def set_full_param(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Overwrite a parameter everywhere DeepSpeed keeps it (fp32 master copy and model copy).

    Writing `param.data` alone is undone at the next step under ZeRO-1/2, whose optimizer
    holds its own fp32 partition; dead-code restarts must survive that step.
    """
    from deepspeed.utils import safe_set_full_fp32_param

    value = value.to(param.device, torch.float32)
    if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
        safe_set_full_fp32_param(param, value)
    if not hasattr(param, "ds_id"):
        with torch.no_grad():
            param.data.copy_(value.to(param.dtype))
