"""The GPU path: device/dtype choice, TTDS training under ZeRO-2 and ZeRO-3, faiss on GPU, a
request served on CUDA. Everything but the CPU-side checks skips, saying why, without CUDA.

On a GPU machine, `pytest -s -m gpu tests/gpu` prints the figures the cluster README asks for:
peak GPU memory per ZeRO stage and examples/s of a ~100M-parameter backbone (tiny-llama built
at 768 x 16 layers, fully fine-tuned) on the generated corpus. That epoch is ~500 examples, so its
examples/s is mostly Ray Data's and CUDA's start-up (16/s on an H200 under ZeRO-2): a check that
the path runs, not a throughput figure (those come from `jobs/benchmark.py --gpu on` on a real corpus).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from ttds.runtime import select_device

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")

# ~100.7M parameters in the transformer blocks: 16 x (attention 1.57M + MLP 4.72M)
BIG_TINY_LLAMA = ["--backbone.hidden_size=768", "--backbone.num_layers=16", "--backbone.num_heads=12", "--backbone.num_kv_heads=4",
                  "--backbone.intermediate_size=2048", "--backbone.finetune=full"]
SMALL = ["--index.levels=3", "--index.user_levels=2", "--index.codebook_size=16", "--index.code_dim=16", "--index.hidden_dims=[32]",
         "--index.epochs=4", "--index.features.source=collaborative", "--optim.batch_size=32", "--optim.lr=1e-4",
         "--optim.patience=100", "--eval.valid_users=100", "--eval.templates=1", "--eval.workers=1", "--eval.beam_width=10",
         "--eval.test_users=50", "--train.num_workers=1", "--train.use_gpu=true"]


def test_cpu_fallback_without_cuda():
    if HAS_CUDA:
        pytest.skip("CUDA is present: the CPU fallback is not what this machine uses")
    spec = select_device()
    assert spec.device.type == "cpu" and spec.dtype == torch.float32 and not spec.is_cuda
    with pytest.raises(RuntimeError, match="no CUDA device"):
        select_device("cuda")


@needs_cuda
def test_cuda_and_bf16_are_chosen():
    spec = select_device()
    assert spec.is_cuda
    assert spec.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert select_device("cpu").device.type == "cpu"  # a forced CPU run still works on a GPU node


@needs_cuda
def test_faiss_index_moves_to_the_gpu():
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        pytest.skip("this faiss has no GPU support: install the project's `gpu` extra (faiss-gpu-cu12)")
    from ttds.rank.item_index import ItemIndex

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gpu_index = ItemIndex(x).index
    assert "Gpu" in type(gpu_index).__name__, type(gpu_index)
    cpu_index = faiss.IndexFlatIP(64)
    cpu_index.add(x)
    q = x[:32]
    _, got = gpu_index.search(q, 10)
    _, want = cpu_index.search(q, 10)
    assert (got[:, 0] == np.arange(32)).all()  # each vector finds itself first
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)]) > 0.95


CUDA_ENGINE_SCRIPT = r"""
import json, torch, torch.distributed as dist
dist.init_process_group("nccl", rank=0, world_size=1)
from ttds.train import deepspeed_utils as dsu
out = {}
for autocast in (False, True):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)).cuda()
    engine = dsu.initialize(model, lr=1e-2, stage=2, micro_batch=16, autocast=autocast)
    y = engine(torch.randn(16, 64, device=engine.device))
    engine.backward(y.float().pow(2).mean())
    engine.step()
    out[f"autocast_{autocast}"] = {"forward_dtype": str(y.dtype), "param_dtype": str(next(model.parameters()).dtype),
                                   "device": y.device.type}
from ttds.train.collectives import all_reduce_values, collective_device
out["collectives"] = {"device": collective_device().type, "sum": all_reduce_values([1.0, 2.5]), "max": all_reduce_values([3.0], "max")}
print("RESULT " + json.dumps(out))
"""


@needs_cuda
@pytest.mark.timeout(300)
def test_on_cuda_the_engine_computes_in_bf16_and_collectives_reduce_cuda_tensors():
    """The CUDA half of tests/train/test_deepspeed_config.py and test_collectives.py: an autocast
    context around engine(...) is switched off inside DeepSpeed on CUDA, so bf16 must come from
    the config; NCCL reduces CUDA tensors only (a CPU one failed SASRec's epoch on an H200)."""
    from single_rank import run_single_rank

    out = run_single_rank(CUDA_ENGINE_SCRIPT, {"DS_ACCELERATOR": "cuda"})
    assert out["autocast_False"] == {"forward_dtype": "torch.float32", "param_dtype": "torch.float32", "device": "cuda"}, out
    assert out["autocast_True"] == {"forward_dtype": "torch.bfloat16", "param_dtype": "torch.float32", "device": "cuda"}, out
    assert out["collectives"] == {"device": "cuda", "sum": [1.0, 2.5], "max": [3.0]}, out


FIGURES: dict[int, dict] = {}


@needs_cuda
@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("stage", [2, 3])
def test_ttds_trains_on_gpu_under_zero(stage, ray_session, synthetic_corpus, tmp_path):
    from ttds.config import TTDSJobConfig, load_config
    from ttds.train.ttds_job import train_ttds

    cfg = load_config(TTDSJobConfig, None, [f"--data.corpus={synthetic_corpus}", f"--output_dir={tmp_path}", "--optim.epochs=1",
                                            f"--train.zero_stage={stage}", *SMALL, *BIG_TINY_LLAMA])
    t = time.time()
    m = train_ttds(cfg)
    h = m["history"][-1]
    FIGURES[stage] = {"gpu_peak_mb": round(h["gpu_peak_mb"]), "examples_per_s": round(h["examples_per_s"], 1),
                      "valid_NDCG@10": round(h["valid_NDCG@10"], 4), "wall_s": round(time.time() - t)}
    print(f"\nZeRO-{stage}: {FIGURES[stage]}  (all stages so far: {FIGURES})")
    assert h["gpu_peak_mb"] > 100  # the backbone really was on the GPU
    assert np.isfinite(h["loss"]) and m["test"]["users"] == 50

    # a request served from the trained folder on CUDA (what the generator replica runs)
    from ttds.config import RecommenderConfig
    from ttds.serve.recommender import Recommender

    rec = Recommender.load(m["out_dir"] + "/model", RecommenderConfig(device="cuda"), parts=("generator", "retriever"))
    t1 = time.time()
    items = rec.recommend(user_id=3, k=10)
    print(f"served on {rec.device}: {len(items)} items in {1000 * (time.time() - t1):.0f} ms")
    assert rec.device.type == "cuda" and len(items) == 10 and len({i for i, _ in items}) == 10
