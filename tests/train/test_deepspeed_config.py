"""DeepSpeed ZeRO-2/3 with CPU offload: the config dict, and engines that really step on CPU.

The offload options are for backbones that do not fit one GPU; nothing about building the
engine needs a GPU, so it is checked here (the GPU figures are in tests/gpu/test_gpu_path.py).
The engines run in a subprocess: DeepSpeed initialises torch.distributed, which must not leak
into the rest of the test session.
"""

from __future__ import annotations

import os

import pytest
from single_rank import run_single_rank

from ttds.train.deepspeed_utils import deepspeed_config

ENGINE_SCRIPT = r"""
import json, os, sys
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=0, world_size=1)
from ttds.train import deepspeed_utils as dsu
out = {}
# autocast: the config's torch_autocast section makes the engine's forward compute in bf16 (on
# CUDA an autocast context opened around engine(...) is switched off inside it: seen on an H200)
for autocast in (False, True):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    engine = dsu.initialize(model, lr=1e-2, stage=2, micro_batch=16, autocast=autocast)
    y = engine(torch.randn(16, 8))
    engine.backward(y.float().pow(2).mean())
    engine.step()
    out[f"autocast_{autocast}"] = {"forward_dtype": str(y.dtype), "param_dtype": str(next(model.parameters()).dtype)}
for stage in (2, 3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    engine = dsu.initialize(model, lr=1e-2, stage=stage, micro_batch=16, offload=True)
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    losses = []
    for _ in range(8):
        loss = ((engine(x) - y) ** 2).mean()
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    with dsu.gathered(model.parameters()):
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    zero = engine.config["zero_optimization"] if isinstance(engine.config, dict) else {}
    out[stage] = {"losses": losses, "optimizer": type(engine.optimizer).__name__, "finite": finite,
                  "partitioned": any(hasattr(p, "ds_id") for p in model.parameters()),
                  "offload_optimizer": engine.zero_offload_optimizer() is not None,
                  "offload_param": engine.zero_offload_param() is not None}
print("RESULT " + json.dumps(out))
"""


def test_zero3_offload_config_dict():
    cfg = deepspeed_config(3, micro_batch=4, world_size=2, bf16=True, offload=True)
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert cfg["train_batch_size"] == 8 and cfg["bf16"]["enabled"] is True
    assert cfg["zero_force_ds_cpu_optimizer"] is False  # our torch AdamW is allowed to step the offloaded state
    z2 = deepspeed_config(2, 4, 1, offload=True)["zero_optimization"]
    assert "offload_optimizer" in z2 and "offload_param" not in z2  # ZeRO-2 does not partition parameters
    plain = deepspeed_config(3, 4, 1)
    assert "offload_optimizer" not in plain["zero_optimization"] and "zero_force_ds_cpu_optimizer" not in plain
    assert "offload_optimizer" not in deepspeed_config(1, 4, 1, offload=True)["zero_optimization"]  # stage 1: ignored
    with pytest.raises(ValueError, match="zero_stage"):
        deepspeed_config(4, 4, 1)
    assert deepspeed_config(2, 4, 1, autocast=True)["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "torch_autocast" not in plain


def test_code_distances_stay_fp32_under_bf16_autocast():
    import torch

    from ttds.index.rq import _nearest, _sq_dists

    g = torch.Generator().manual_seed(0)
    x, book = torch.randn(512, 32, generator=g), torch.randn(256, 32, generator=g)
    book[1] = book[0] + 1e-3  # two codes bf16 cannot tell apart
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        d = _sq_dists(x, book)
        nearest = _nearest(x, book)
    assert d.dtype == torch.float32
    assert torch.equal(nearest, _nearest(x, book))  # the same codes as without autocast


def test_offload_is_a_job_option():
    from ttds.config import TTDSJobConfig, load_config

    cfg = load_config(TTDSJobConfig, None, ["--train.zero_stage=3", "--train.offload=true"])
    assert cfg.train.zero_stage == 3 and cfg.train.offload is True


@pytest.mark.timeout(300)
def test_zero2_and_zero3_offload_engines_step_on_cpu():
    out = run_single_rank(ENGINE_SCRIPT, {"GLOO_SOCKET_IFNAME": "lo", "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")})
    for stage in ("2", "3"):
        res = out[stage]
        assert res["finite"] and res["offload_optimizer"], res
        assert res["losses"][-1] < res["losses"][0], res["losses"]  # it trains
    assert out["3"]["partitioned"] and out["3"]["offload_param"] and out["3"]["optimizer"].endswith("Stage3")
    assert not out["2"]["offload_param"]
    # the GPU path's mixed precision: bf16 forward only through the config, fp32 master weights either way
    assert out["autocast_False"] == {"forward_dtype": "torch.float32", "param_dtype": "torch.float32"}, out
    assert out["autocast_True"] == {"forward_dtype": "torch.bfloat16", "param_dtype": "torch.float32"}, out


TORCH_ENGINE_SCRIPT = r"""
import json
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo", rank=0, world_size=1)
from ttds.train import deepspeed_utils as dsu
out = {}
for alone in (False, True):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    groups = [{"params": list(model[0].parameters())}, {"params": list(model[2].parameters()), "lr": 1e-3}]
    engine = dsu.initialize(model, lr=1e-2, stage=2, micro_batch=16, param_groups=groups, torch_when_alone=alone)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, 8, generator=g), 100 * torch.randn(16, 1, generator=g)  # large: the clipping matters
        engine.backward(((engine(x) - y) ** 2).mean())
        engine.step()
    out[str(alone)] = {"engine": type(engine).__name__, "params": [p.detach().flatten().tolist() for p in model.parameters()]}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_torch_engine_steps_as_deepspeed_does_on_one_cpu_worker():
    """train.deepspeed_when_alone=false: the plain-torch path is DeepSpeed's step without ZeRO's copies."""
    import numpy as np

    out = run_single_rank(TORCH_ENGINE_SCRIPT, {"GLOO_SOCKET_IFNAME": "lo", "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")})
    assert out["True"]["engine"] == "TorchEngine" and out["False"]["engine"] != "TorchEngine"
    for a, b in zip(out["True"]["params"], out["False"]["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
