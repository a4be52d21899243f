"""Speed figures, each a RATIO of two measurements taken in one run so machine noise cancels.

- decoding: users/s of trie-constrained vs unconstrained beam search of the same width
  (target: the constraint costs at most 20%), and of the generative-retrieval fast path vs
  constrained beam search (target: at least 10x). Measured twice: on the reference setting
  (a random tiny Llama over ~10k random 4-token IDs: `benchmarks/decode_speed.py`, comparable
  across machines) and on the TRAINED model with its real trie and real test prompts;
- training throughput (examples/s) of the TTDS job (and SASRec) with 1 and 2 Ray Train
  workers on a short run, and the 2-worker/1-worker ratio.

Modes alternate run by run and each keeps its best time, so a load spike from other
processes does not land on one mode only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ttds.baselines import train_and_evaluate
from ttds.config import TrainConfig
from ttds.data.task_examples import write_task_rows
from ttds.llm.model_io import load_model, prompt_builder
from ttds.llm.queries import prompt_queries, prompt_states
from ttds.rank import BeamConfig, ItemIndex, PrefixTrie, beam_search, build_trie, left_pad, pool_of
from ttds.runtime import select_device
from ttds.train.launch import run_trainer
from ttds.train.ttds_job import run_facts
from ttds.train.ttds_worker import TTDSWork, task_rates, ttds_worker

log = logging.getLogger(__name__)

__all__ = [
    "SpeedConfig", "benchmark_decoding", "build_reference", "decode_speed_trained", "random_ids",
    "seq_throughput", "time_modes", "ttds_throughput",
]


# ----------------------------------------------------------------------------- decoding
@dataclass
class SpeedConfig:
    """Reference decoding setting (the agreed defaults of benchmarks/decode_speed.py)."""

    n_items: int = 10_000
    code_len: int = 4
    codebook_size: int = 256
    base_vocab: int = 76  # 76 + 4 * 256 = 1100 tokens
    batch: int = 64
    beam: int = 20
    top_k: int = 10
    history_items: int = 10  # prompt ~ history_items * code_len tokens, varied per user
    hidden: int = 64
    layers: int = 2
    repeats: int = 5
    threads: int = 1  # users/s per thread, comparable across machines; 0 = torch default
    seed: int = 0


def random_ids(cfg: SpeedConfig, rng: np.random.Generator) -> np.ndarray:
    """Distinct random IDs; token j comes from codebook j (as residual quantisation gives)."""
    seen: set[tuple[int, ...]] = set()
    while len(seen) < cfg.n_items:
        codes = rng.integers(0, cfg.codebook_size, size=(cfg.n_items, cfg.code_len))
        seen.update(map(tuple, codes.tolist()))
    codes = np.array(sorted(seen)[: cfg.n_items])
    rng.shuffle(codes)
    offsets = cfg.base_vocab + cfg.codebook_size * np.arange(cfg.code_len)
    return codes + offsets[None, :]


def build_reference(cfg: SpeedConfig):
    """Random tiny Llama, trie and one batch of left-padded prompts of the reference setting."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vocab = cfg.base_vocab + cfg.code_len * cfg.codebook_size
    ids = random_ids(cfg, rng)
    trie = PrefixTrie.from_sequences(ids.tolist(), list(range(cfg.n_items)), vocab)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab, hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 2, num_hidden_layers=cfg.layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        )
    ).eval()
    prompts = []
    for _ in range(cfg.batch):
        n = int(rng.integers(max(1, cfg.history_items // 2), cfg.history_items + 1))
        hist = ids[rng.integers(0, cfg.n_items, size=n)].reshape(-1).tolist()
        prompts.append([1, 2, 3] + hist + [4])
    input_ids, mask, _ = left_pad(prompts, 0)
    return model, trie, input_ids, mask


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU kernels run asynchronously: time what was done, not queued


def time_modes(modes: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Best wall seconds of each callable; one warm-up each, then modes alternate per repeat."""
    for fn in modes.values():
        fn()
    _sync()
    best = {name: float("inf") for name in modes}
    for _ in range(max(1, repeats)):
        for name, fn in modes.items():
            t0 = time.perf_counter()
            fn()
            _sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _beam_modes(model, trie: PrefixTrie, batches: list[tuple[torch.Tensor, torch.Tensor]], beam: int, top_k: int) -> dict[str, Callable[[], None]]:
    def run(constrained: bool) -> Callable[[], None]:
        cfg = BeamConfig(beam_width=beam, top_k=top_k, constrained=constrained)

        def go() -> None:
            with torch.no_grad():
                for ids, mask in batches:
                    beam_search(model, ids, mask, trie, cfg)

        return go

    return {"unconstrained": run(False), "constrained": run(True)}


def benchmark_decoding(cfg: SpeedConfig) -> dict[str, float]:
    """Reference setting: users/s of constrained and unconstrained beam, and their time ratio."""
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        model, trie, input_ids, mask = build_reference(cfg)
        best = time_modes(_beam_modes(model, trie, [(input_ids, mask)], cfg.beam, cfg.top_k), cfg.repeats)
    finally:
        torch.set_num_threads(before)
    res = {f"{name}_users_per_s": cfg.batch / sec for name, sec in best.items()}
    res["constrained_over_unconstrained_time"] = best["constrained"] / best["unconstrained"]
    return res


def decode_speed_trained(
    model_dir: str | Path, corpus, users: int = 256, batch: int = 64, beam: int = 20, top_k: int = 10,
    repeats: int = 3, threads: int = 1, seed: int = 0, template: int = 0, device: str = "auto",
) -> dict:
    """The same three modes on a trained model: its trie, real test prompts of `users` users.

    All modes start from the same token tensors (prompt building is not timed) and rank the
    same users in the same batches; retrieval includes the backbone forward, the id_head and
    the faiss search.
    """
    from safetensors.numpy import load_file

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        dev = select_device(device).device
        m = load_model(model_dir, device=dev)
        builder = prompt_builder(m)
        trie = build_trie(builder, len(m.tokenizer))
        backbone, head = m.model.backbone.eval(), m.model.id_head.eval()
        index = ItemIndex(load_file(str(Path(model_dir) / "features.safetensors"))["item_x"])
        uids, hists, _ = corpus.eval_arrays("test")
        pick = np.sort(np.random.default_rng(seed).choice(len(uids), min(users, len(uids)), replace=False))
        max_history, pool = int(m.meta["max_history"]), pool_of(m.meta)
        prompts = [builder.next_item_prompt(int(uids[i]), list(hists[i])[-max_history:], template) for i in pick]
        order = np.argsort([len(p) for p in prompts], kind="stable")
        batches = [tuple(t.to(dev) for t in left_pad([prompts[i] for i in order[s : s + batch]], builder.pad_id)[:2]) for s in range(0, len(order), batch)]

        def retrieval() -> None:
            with torch.no_grad():
                for ids, mask in batches:
                    index.search(prompt_queries(backbone, head, ids, mask, pool).cpu().numpy(), top_k)

        def prompt_forward() -> None:  # the floor of ANY one-forward fast path: retrieval's prompt pass alone
            with torch.no_grad():
                for ids, mask in batches:
                    prompt_states(backbone, ids, mask)

        modes = _beam_modes(backbone, trie, batches, beam, top_k)
        modes["retrieval"] = retrieval
        modes["prompt_forward"] = prompt_forward
        best = time_modes(modes, repeats)
    finally:
        torch.set_num_threads(before)
    n = len(prompts)
    return {
        "users": n, "batch": batch, "beam_width": beam, "top_k": top_k, "threads": threads or before, "items": len(m.items), "device": str(dev),
        **{f"{name}_users_per_s": round(n / sec, 2) for name, sec in best.items()},
        "constrained_over_unconstrained_time": round(best["constrained"] / best["unconstrained"], 3),
        "retrieval_speedup_over_beam": round(best["constrained"] / best["retrieval"], 2),
        # constrained beam / one prompt forward: the most a one-forward path could gain over beam here
        "beam_over_prompt_forward": round(best["constrained"] / best["prompt_forward"], 2),
    }


# ----------------------------------------------------------------------------- training throughput
def ttds_throughput(cfg, corpus, tok_dir: Path, out: Path, workers: int, rows: int = 2048, cpus_per_worker: float = 0.5) -> dict:
    """Examples/s of one short TTDS epoch over the first `rows` task rows on `workers` workers.

    A fresh run (no resume), validation on a few users only (not timed: `train_s` ends before
    it). The worker reports its own rank's rate; ranks get equal shards and step together
    (DeepSpeed all-reduces every step), so the job's rate is rank 0's times the worker count.
    """
    import ray.data

    if out.exists():  # a scratch folder: Ray Train would resume an earlier run found in it
        shutil.rmtree(out)
    out.mkdir(parents=True)
    short = dataclasses.replace(
        cfg,
        optim=dataclasses.replace(cfg.optim, epochs=1, patience=1, time_budget_s=0.0),
        eval=dataclasses.replace(cfg.eval, valid_users=16, beam_width=max(cfg.eval.top_k, 10)),
        train=dataclasses.replace(cfg.train, log_every=0),
    )
    facts = run_facts(short, corpus, tok_dir, out)
    tasks = [t for t, r in task_rates(short, facts.has_users).items() if r > 0]
    task_rows = write_task_rows(corpus, out / "data", tasks, short.data.max_history)
    ds = ray.data.read_parquet(str(task_rows)).limit(rows)
    train = dataclasses.replace(cfg.train, num_workers=workers, cpus_per_worker=cpus_per_worker, resume=False, max_failures=0)
    t0 = time.time()
    result = run_trainer(ttds_worker, TTDSWork(short, facts), train, out, f"throughput_{workers}w", datasets={"train": ds}, score_attribute=None)
    if result.error:
        raise result.error
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    rank0 = float(hist[-1]["examples_per_s"])
    return {
        "workers": workers, "rows": rows, "examples_per_s": round(rank0 * workers, 2), "rank0_examples_per_s": round(rank0, 2),
        "train_s": round(float(hist[-1]["train_s"]), 2), "run_wall_s": round(time.time() - t0, 1),
    }


def seq_throughput(name: str, corpus, out: Path, workers: int, overrides: dict, cpus_per_worker: float = 0.5, use_gpu: bool = False) -> dict:
    """Examples/s (next-item predictions, all ranks) of one SASRec/GRU4Rec epoch on `workers` workers."""
    run_dir = out / f"{name}_{workers}w"
    if run_dir.exists():  # scratch: never resume an earlier measurement
        shutil.rmtree(run_dir)
    res = train_and_evaluate(
        name, corpus.root, run_dir, {**overrides, "epochs": 1, "time_budget_s": 0.0},
        TrainConfig(num_workers=workers, cpus_per_worker=cpus_per_worker, use_gpu=use_gpu, resume=False, max_failures=0),
    )
    return {"workers": workers, "examples_per_s": round(float(res["examples_per_s"]), 2), "run_wall_s": round(float(res["wall_s"]), 1)}


def scaling_workers(use_gpu: bool, cluster_gpus: float) -> tuple[tuple[int, ...], str | None]:
    """The worker counts the 1- vs 2-worker throughput can use here, and why one is left out.

    Each GPU worker holds a whole GPU: on a one-GPU machine a 2-worker run would wait for a
    second GPU forever (Ray Train keeps requesting the resources), so only 1 worker is measured."""
    if use_gpu and cluster_gpus < 2:
        return (1,), f"2 GPU workers need 2 GPUs; this Ray cluster has {cluster_gpus:g}"
    return (1, 2), None


def scaling(run: Callable[[int], dict], repeats: int = 2, workers: tuple[int, ...] = (1, 2)) -> dict:
    """1- vs 2-worker throughput: runs alternate (1, 2, 1, 2, ...) and each count keeps its best,
    so a load spike from other processes does not land on one side only. `workers=(1,)`: the
    1-worker figure alone, no ratio (see `scaling_workers`)."""
    runs: dict[int, list[dict]] = {w: [] for w in workers}
    for _ in range(max(1, repeats)):
        for w in workers:
            runs[w].append(run(w))
    best = {w: max(rs, key=lambda r: r["examples_per_s"]) for w, rs in runs.items()}
    out: dict = {"1_worker": best[1]}
    if 2 in best:
        out["2_workers"] = best[2]
        out["ratio_2_over_1"] = round(best[2]["examples_per_s"] / max(best[1]["examples_per_s"], 1e-9), 3)
    out["all_examples_per_s"] = {f"{w}_workers": [r["examples_per_s"] for r in rs] for w, rs in runs.items()}
    return out
