"""How ttds's costs grow with the catalogue: one figure per (measure, catalogue size).

Why a separate harness from `bench/harness.py`: that one compares systems on a fixed corpus;
this one holds the model tiny and fixed and grows the catalogue (10k, 100k, 1M items, with
`events_per_item` interactions each, so corpora of 100k to 10M events), because the question
is how each stage's time and memory scale, not how good a recipe is.

Every measurement runs in its own niced subprocess (`python -m ttds.bench.scale --one ...`):
its peak RSS is the child's own (`os.wait4`), a crash or a timeout costs one figure, and the
1M-item case never shares memory with another stage. Results go to `results.json` after each
measurement; a rerun skips what is there (a stopped run resumes). `render` writes
docs/scaling.md with log-log plots and the fitted growth exponents.

Measures (all single-threaded torch/faiss, so figures are per core):
- generate / prepare: the streamed synthetic corpus (`data.synthetic.generate_to_parquet`) and
  its preparation (`data.prepare.prepare_corpus`): wall time and peak RSS.
- tokenizer: RQ item tower (`index.rq`) training examples/s, then encoding every item.
- table / trie: the semantic-ID table (`index.table`) and the prefix trie built from it.
- beam: trie-constrained beam search (`decode.beam.rank_items`, fixed width, seen items
  excluded) with a tiny Llama: users/s.
- item_head: one forward + a full-catalogue logit row per user + top-k: users/s.
- retrieval: faiss exact (`decode.retrieval.ItemIndex`) vs HNSW and IVF: users/s, recall@10.
- train_full / train_sampled: TTDS model steps with the item head, full vs sampled softmax
  (`loss.item_head_negatives`): examples/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MEASURES = ("generate", "prepare", "tokenizer", "table", "trie", "beam", "item_head", "retrieval", "train_full", "train_sampled")
N_SPECIAL = 4  # token ids below this are "text" tokens of the tiny backbone (pad, bos, eos, sep)


@dataclass
class ScaleConfig:
    """What to grow and what to hold fixed."""

    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    events_per_item: int = 10  # corpus = sizes x this (10M events at 1M items)
    measures: tuple[str, ...] = MEASURES
    out: str = "runs/scale"
    doc: str = "docs/scaling.md"
    levels: int = 3  # semantic ID length M (plus a suffix on collisions)
    codebook_size: int = 256
    x_dim: int = 64  # item vector width (tokenizer input, retrieval)
    hidden: int = 64  # tiny backbone width: cost growth, not quality
    layers: int = 2
    beam_width: int = 20
    users: int = 128  # users ranked per size (beam, item head)
    queries: int = 2000  # retrieval queries per size
    history: int = 5  # items in each prompt
    tokenizer_steps: int = 30
    tokenizer_batch: int = 1024
    train_steps: int = 5
    train_batch: int = 16  # sequences per step; each has `history` + 1 items
    negatives: int = 1024  # sampled softmax negatives (train_sampled)
    # HNSW's single-threaded build past this size took >12 min on the loaded 2-core machine
    # (killed); IVF and exact search still run there
    hnsw_max_items: int = 300_000
    timeout_s: int = 1800  # per measurement
    nice: int = 10
    threads: int = 1

    def __post_init__(self) -> None:
        self.sizes = tuple(int(s) for s in self.sizes)
        self.measures = tuple(self.measures)
        bad = [m for m in self.measures if m not in MEASURES]
        if bad:
            raise ValueError(f"unknown measures {bad}; expected some of {MEASURES}")
        if any(s < 1000 for s in self.sizes):
            raise ValueError(f"sizes must be >= 1000 items, got {self.sizes}")


# --------------------------------------------------------------------------- shared inputs


def _work(cfg: ScaleConfig, n: int) -> Path:
    p = Path(cfg.out) / f"items_{n}"
    p.mkdir(parents=True, exist_ok=True)
    return p


def item_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (sqrt(n) clusters): a structure ANN indexes exploit, as real item X has."""
    rng = np.random.default_rng(seed)
    k = max(8, int(math.sqrt(n)))
    centers = rng.standard_normal((k, dim)).astype(np.float32)
    x = centers[rng.integers(k, size=n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _codes(cfg: ScaleConfig, n: int) -> np.ndarray:
    """The tokenizer's codes when that measure ran for this size, else seeded random codes."""
    p = _work(cfg, n) / "codes.npy"
    if p.exists():
        return np.load(p)
    return np.random.default_rng(1).integers(cfg.codebook_size, size=(n, cfg.levels))


def _table(cfg: ScaleConfig, n: int):
    from ttds.index.table import SemanticIDTable

    return SemanticIDTable.from_codes("item", np.arange(n), _codes(cfg, n), cfg.codebook_size)


def _token_ids(cfg: ScaleConfig, table) -> list[list[int]]:
    """Each item's ID as backbone token ids: level l code c -> N_SPECIAL + l*N + c, suffix k after."""
    base = N_SPECIAL + np.arange(cfg.levels) * cfg.codebook_size
    codes = table.codes + base
    suffix_base = N_SPECIAL + cfg.levels * cfg.codebook_size
    return [list(r) + ([suffix_base + int(s)] if s >= 0 else []) for r, s in zip(codes.tolist(), table.suffix.tolist())]


def _vocab(cfg: ScaleConfig, table) -> int:
    return N_SPECIAL + cfg.levels * cfg.codebook_size + table.max_suffix + 1


def _backbone(cfg: ScaleConfig, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.layers, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=2 * cfg.hidden, max_position_embeddings=256, tie_word_embeddings=False,
    ))


def _histories(cfg: ScaleConfig, n: int, users: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(n, size=(users, cfg.history))


def _prompts(ids: list[list[int]], hist: np.ndarray) -> list[list[int]]:
    return [[1] + [t for i in row for t in ids[i]] + [3] for row in hist.tolist()]


def _tensor_bytes(obj) -> int:
    import torch

    return int(sum(v.numel() * v.element_size() for v in vars(obj).values() if isinstance(v, torch.Tensor)))


# --------------------------------------------------------------------------- measures (one per child process)


def m_generate(cfg: ScaleConfig, n: int) -> dict:
    from ttds.data.synthetic import SyntheticConfig, generate_to_parquet

    users = max(100, n * cfg.events_per_item // 11)  # sequences of 6-16 events: ~11 on average
    t = time.perf_counter()
    raw, _ = generate_to_parquet(SyntheticConfig(n_items=n, n_users=users, n_clusters=max(20, n // 50), seed=0), _work(cfg, n) / "raw")
    return {"seconds": time.perf_counter() - t, "events": raw.num_interactions, "users": users}


def m_prepare(cfg: ScaleConfig, n: int) -> dict:
    from ttds.data.prepare import prepare_corpus
    from ttds.data.raw import RawCorpus

    raw_dir = _work(cfg, n) / "raw"
    if not (raw_dir / "raw_interactions.parquet").exists():
        raise FileNotFoundError(f"{raw_dir}: run the generate measure first")
    raw = RawCorpus(source="synthetic", name="synthetic", interactions=raw_dir / "raw_interactions.parquet", items=raw_dir / "raw_items.parquet")
    raw.rejects.seen = raw.num_interactions
    t = time.perf_counter()
    m = prepare_corpus(raw, _work(cfg, n) / "prepared")
    secs = time.perf_counter() - t
    return {"seconds": secs, "events": m["counts"]["interactions"], "items": m["counts"]["items"], "users": m["counts"]["users"],
            "events_per_s": m["counts"]["interactions"] / secs}


def m_tokenizer(cfg: ScaleConfig, n: int) -> dict:
    import torch

    from ttds.index.rq import RQConfig, RQTokenizer

    x = torch.from_numpy(item_vectors(n, cfg.x_dim))
    tower = RQTokenizer(RQConfig(input_dim=cfg.x_dim, code_dim=32, levels=cfg.levels, codebook_size=cfg.codebook_size,
                                 hidden_dims=(128,), kmeans_iters=10, last_level="nearest"))
    opt = torch.optim.Adam(tower.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    tower.train()
    t0 = time.perf_counter()
    for step in range(cfg.tokenizer_steps + 1):
        if step == 1:
            t = time.perf_counter()  # step 0 runs the k-means init: timed apart
            init_s = t - t0
        batch = x[torch.randint(n, (cfg.tokenizer_batch,), generator=gen)]
        loss = tower(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    codes = tower.encode(x).numpy()
    encode_s = time.perf_counter() - t
    np.save(_work(cfg, n) / "codes.npy", codes)
    return {"train_examples_per_s": cfg.tokenizer_steps * cfg.tokenizer_batch / train_s, "kmeans_init_s": init_s,
            "encode_s": encode_s, "encode_items_per_s": n / encode_s}


def m_table(cfg: ScaleConfig, n: int) -> dict:
    import tracemalloc

    from ttds.index.table import SemanticIDTable

    codes = _codes(cfg, n)
    tracemalloc.start()
    t = time.perf_counter()
    table = SemanticIDTable.from_codes("item", np.arange(n), codes, cfg.codebook_size)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    probe = np.random.default_rng(0).integers(n, size=1000)
    rows = [table.row_of(int(i)) for i in probe]
    names = [table.entity_of(table.tokens(r)) for r in rows]
    lookup_s = time.perf_counter() - t
    assert names == probe.tolist()
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    d = _work(cfg, n) / "table"
    t = time.perf_counter()
    table.save(d)
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    SemanticIDTable.load(d, "item")
    load_s = time.perf_counter() - t
    return {"build_s": build_s, "first_1000_lookups_s": lookup_s, "save_s": save_s, "load_s": load_s,
            "python_heap_peak_mb": traced_peak / 2**20, "array_mb": (table.codes.nbytes + table.ids.nbytes + table.suffix.nbytes) / 2**20,
            "collision_rate": table.collision_rate, "max_suffix": table.max_suffix}


def m_trie(cfg: ScaleConfig, n: int) -> dict:
    from ttds.rank.trie import PrefixTrie

    table = _table(cfg, n)
    ids = _token_ids(cfg, table)
    t = time.perf_counter()
    trie = PrefixTrie.from_sequences(ids, table.ids, _vocab(cfg, table))
    return {"build_s": time.perf_counter() - t, "nodes": trie.num_nodes, "tensor_mb": _tensor_bytes(trie) / 2**20,
            "bytes_per_item": _tensor_bytes(trie) / n}


def m_beam(cfg: ScaleConfig, n: int) -> dict:
    import torch

    from ttds.rank.beam import BeamConfig, rank_beam
    from ttds.rank.trie import PrefixTrie

    table = _table(cfg, n)
    ids = _token_ids(cfg, table)
    trie = PrefixTrie.from_sequences(ids, table.ids, _vocab(cfg, table))
    model = _backbone(cfg, _vocab(cfg, table)).eval()
    hist = _histories(cfg, n, cfg.users + 32)
    prompts = _prompts(ids, hist)
    beam = BeamConfig(beam_width=cfg.beam_width, top_k=10)
    rank_beam(model, prompts[:32], trie, beam, pad_id=0, batch_size=32, seen=hist[:32].tolist())  # warm-up
    t = time.perf_counter()
    out = rank_beam(model, prompts[32:], trie, beam, pad_id=0, batch_size=32, seen=hist[32:].tolist()).items
    secs = time.perf_counter() - t
    assert (out >= 0).all() and torch.get_num_threads() == cfg.threads
    return {"users_per_s": cfg.users / secs, "ms_per_user": 1000 * secs / cfg.users, "beam_width": cfg.beam_width}


def m_item_head(cfg: ScaleConfig, n: int) -> dict:
    import torch

    from ttds.rank.item_head import rank_item_head

    table = _table(cfg, n)
    ids = _token_ids(cfg, table)
    model = _backbone(cfg, _vocab(cfg, table)).eval()
    head = torch.nn.Linear(cfg.hidden, n, bias=False)
    hist = _histories(cfg, n, cfg.users + 32)
    prompts = _prompts(ids, hist)
    batch = 32

    def run(lo: int, hi: int) -> None:
        with torch.no_grad():  # the serving/evaluation ranker: seen items out, the tie rule
            rank_item_head(model, head, prompts[lo:hi], 10, pad_id=0, batch_size=batch, seen=hist[lo:hi].tolist())

    run(0, 32)
    t = time.perf_counter()
    run(32, 32 + cfg.users)
    secs = time.perf_counter() - t
    return {"users_per_s": cfg.users / secs, "head_mb": n * cfg.hidden * 4 / 2**20, "scores_mb_per_batch": batch * n * 4 / 2**20}


def m_retrieval(cfg: ScaleConfig, n: int) -> dict:
    import faiss

    from ttds.rank.item_index import ItemIndex

    faiss.omp_set_num_threads(cfg.threads)
    x = item_vectors(n, cfg.x_dim)
    rng = np.random.default_rng(3)
    q = x[rng.integers(n, size=cfg.queries)] + 0.3 * rng.standard_normal((cfg.queries, cfg.x_dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out: dict = {}
    t = time.perf_counter()
    flat = ItemIndex(x)
    out["flat_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, truth = flat.search(q, 10)
    out["flat_users_per_s"] = cfg.queries / (time.perf_counter() - t)

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())]))

    if n <= cfg.hnsw_max_items:
        hnsw = faiss.IndexHNSWFlat(cfg.x_dim, 16, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        t = time.perf_counter()
        hnsw.add(x)
        out["hnsw_build_s"] = time.perf_counter() - t
        hnsw.hnsw.efSearch = 64
        t = time.perf_counter()
        _, found = hnsw.search(q, 10)
        out["hnsw_users_per_s"] = cfg.queries / (time.perf_counter() - t)
        out["hnsw_recall_at_10"] = recall(found)
        del hnsw
    else:
        out["hnsw_skipped"] = f"n > hnsw_max_items={cfg.hnsw_max_items}"
    nlist = int(4 * math.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(cfg.x_dim), cfg.x_dim, nlist, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    ivf.train(x[rng.permutation(n)[: min(n, 64 * nlist)]])
    ivf.add(x)
    out["ivf_build_s"] = time.perf_counter() - t
    ivf.nprobe = 16
    t = time.perf_counter()
    _, found = ivf.search(q, 10)
    out["ivf_users_per_s"] = cfg.queries / (time.perf_counter() - t)
    out["ivf_recall_at_10"] = recall(found)
    out["ivf_nlist"] = nlist
    return out


def _train(cfg: ScaleConfig, n: int, negatives: int) -> dict:
    import torch

    from ttds.llm.model import TTDSModel
    from ttds.rank.pad import left_pad

    table = _table(cfg, n)
    ids = _token_ids(cfg, table)
    model = TTDSModel(_backbone(cfg, _vocab(cfg, table)), torch.nn.Module(), cfg.hidden, 8, n_items=n)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(4)

    def batch():
        items = rng.integers(n, size=(cfg.train_batch, cfg.history + 1))
        seqs, pos = [], []
        for r, row in enumerate(items.tolist()):
            toks = [1]
            for i in row:
                pos.append((r, len(toks) - 1))  # the state just before the item's ID
                toks += ids[i]
            seqs.append(toks)
        padded = left_pad(seqs, 0)
        x, m = padded.ids, padded.mask
        shift = x.shape[1] - torch.tensor([len(s) for s in seqs])  # left padding moves positions
        p = torch.tensor(pos)
        p[:, 1] += shift[p[:, 0]]
        return x, m, p, torch.as_tensor(items.reshape(-1))

    def step() -> float:
        x, m, p, tg = batch()
        out = model(x, m, x.masked_fill(m == 0, -100), item_positions=p, item_targets=tg, item_weight=1.0, item_negatives=negatives)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        return float(out["item_head_loss"])

    step()  # warm-up (allocations, Adam state)
    t = time.perf_counter()
    losses = [step() for _ in range(cfg.train_steps)]
    secs = time.perf_counter() - t
    return {"examples_per_s": cfg.train_steps * cfg.train_batch / secs, "s_per_step": secs / cfg.train_steps,
            "item_positions_per_step": cfg.train_batch * (cfg.history + 1), "negatives": negatives, "last_loss": losses[-1]}


def m_train_full(cfg: ScaleConfig, n: int) -> dict:
    return _train(cfg, n, 0)


def m_train_sampled(cfg: ScaleConfig, n: int) -> dict:
    return _train(cfg, n, cfg.negatives)


# --------------------------------------------------------------------------- driver


def _child(cfg: ScaleConfig, measure: str, n: int, result_path: Path) -> None:
    import torch

    torch.set_num_threads(cfg.threads)
    out = globals()[f"m_{measure}"](cfg, n)
    result_path.write_text(json.dumps(out))


def run_one(cfg: ScaleConfig, measure: str, n: int) -> dict:
    """One measurement in a niced child; adds its wall time and its own peak RSS."""
    res = _work(cfg, n) / f"{measure}.json"
    res.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ttds.bench.scale", "--one", measure, "--size", str(n), "--config", json.dumps(asdict(cfg))]
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
    t = time.perf_counter()
    err_path = _work(cfg, n) / f"{measure}.stderr"
    with open(err_path, "w") as err_file:  # a file, not a pipe: a chatty child cannot block on a full pipe
        proc = subprocess.Popen(cmd, env=env, preexec_fn=lambda: os.nice(cfg.nice), stderr=err_file)
    deadline = time.time() + cfg.timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return {"error": f"timed out after {cfg.timeout_s} s", "wall_s": time.perf_counter() - t, "peak_rss_mb": usage.ru_maxrss / 1024}
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = err_path.read_text(errors="replace")
    out = {"wall_s": time.perf_counter() - t, "peak_rss_mb": usage.ru_maxrss / 1024}
    if proc.returncode != 0 or not res.exists():
        out["error"] = (err.strip().splitlines() or ["exit code %d" % proc.returncode])[-1][:500]
        return out
    out.update(json.loads(res.read_text()))
    return out


def run(cfg: ScaleConfig) -> dict:
    """Measure every (size, measure) not already in results.json; then render the doc."""
    path = Path(cfg.out) / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("sizes", {})
    results["config"] = asdict(cfg)
    for n in cfg.sizes:
        done = results["sizes"].setdefault(str(n), {})
        for measure in cfg.measures:
            if measure in done and "error" not in done[measure]:
                continue
            log.info("scale: %s at %d items", measure, n)
            done[measure] = run_one(cfg, measure, n)
            log.info("scale: %s at %d items: %s", measure, n, done[measure])
            results["machine"] = _machine()
            path.write_text(json.dumps(results, indent=2))
    render(results, Path(cfg.doc))
    return results


def _machine() -> dict:
    import platform

    import psutil

    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "host": platform.node()}


# --------------------------------------------------------------------------- report

# (measure, field, label, unit): the curves that docs/scaling.md plots against catalogue size
CURVES = (
    ("prepare", "seconds", "data preparation time", "s"),
    ("prepare", "peak_rss_mb", "data preparation peak RSS", "MB"),
    ("generate", "peak_rss_mb", "corpus generation peak RSS", "MB"),
    ("tokenizer", "train_examples_per_s", "tokenizer training", "examples/s"),
    ("tokenizer", "encode_s", "tokenizer: encode every item", "s"),
    ("table", "build_s", "ID table build", "s"),
    ("table", "python_heap_peak_mb", "ID table Python heap peak (build + lookups)", "MB"),
    ("trie", "build_s", "trie build", "s"),
    ("trie", "tensor_mb", "trie memory", "MB"),
    ("beam", "users_per_s", "beam search (width 20)", "users/s"),
    ("beam", "peak_rss_mb", "beam search peak RSS", "MB"),
    ("item_head", "users_per_s", "item-head ranking", "users/s"),
    ("item_head", "peak_rss_mb", "item-head ranking peak RSS", "MB"),
    ("retrieval", "flat_users_per_s", "retrieval: faiss flat", "users/s"),
    ("retrieval", "hnsw_users_per_s", "retrieval: faiss HNSW", "users/s"),
    ("retrieval", "ivf_users_per_s", "retrieval: faiss IVF", "users/s"),
    ("retrieval", "hnsw_recall_at_10", "HNSW recall@10 vs flat", ""),
    ("retrieval", "ivf_recall_at_10", "IVF recall@10 vs flat", ""),
    ("train_full", "examples_per_s", "TTDS training, full softmax", "examples/s"),
    ("train_sampled", "examples_per_s", "TTDS training, sampled softmax", "examples/s"),
    ("train_full", "peak_rss_mb", "TTDS training peak RSS, full softmax", "MB"),
    ("train_sampled", "peak_rss_mb", "TTDS training peak RSS, sampled softmax", "MB"),
)

# plots: one PNG per group of curves that share a unit
PLOTS = (
    ("time", "seconds (log)", [0, 4, 5, 7]),
    ("memory", "MB (log)", [1, 2, 6, 8, 10, 12, 20, 21]),
    ("throughput", "per second (log)", [3, 9, 11, 13, 14, 15, 18, 19]),
)


def series(results: dict, measure: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n, by in sorted(results.get("sizes", {}).items(), key=lambda kv: int(kv[0])):
        v = by.get(measure, {}).get(key)
        if isinstance(v, (int, float)) and v > 0 and "error" not in by.get(measure, {}):
            xs.append(int(n))
            ys.append(float(v))
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def growth_exponent(xs: np.ndarray, ys: np.ndarray) -> float | None:
    """Least-squares slope of log y on log x: cost ~ size^slope (None with fewer than 2 sizes)."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def render(results: dict, doc: Path) -> None:
    """docs/scaling.md's generated part (between markers) and its PNG plots; hand-written text outside the markers stays."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc.parent.mkdir(parents=True, exist_ok=True)
    for name, ylabel, idx in PLOTS:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i in idx:
            measure, key, label, _ = CURVES[i]
            xs, ys = series(results, measure, key)
            if len(xs):
                ax.loglog(xs, ys, marker="o", label=label)
        ax.set_xlabel("catalogue size (items; corpus = 10 events per item)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(doc.parent / f"scaling_{name}.png", dpi=110)
        plt.close(fig)

    sizes = sorted(int(n) for n in results.get("sizes", {}))
    lines = ["<!-- generated by jobs/scale.py: do not edit between these markers -->", "",
             f"Machine: {results.get('machine', {})}; one thread per measurement (torch and faiss), each in its own "
             f"niced process; peak RSS is that process's own. Command: `python jobs/scale.py`.", "",
             "| measure | unit | " + " | ".join(f"{n:,} items" for n in sizes) + " | growth exponent |",
             "| --- | --- | " + " | ".join("---" for _ in sizes) + " | --- |"]
    for measure, key, label, unit in CURVES:
        cells = []
        for n in sizes:
            by = results["sizes"][str(n)].get(measure, {})
            v = by.get(key)
            cells.append("error" if "error" in by else ("" if v is None else _fmt(v)))
        xs, ys = series(results, measure, key)
        g = growth_exponent(xs, ys)
        lines.append(f"| {label} | {unit} | " + " | ".join(cells) + f" | {'' if g is None else f'{g:+.2f}'} |")
    errors = [(n, m, by["error"]) for n, d in results.get("sizes", {}).items() for m, by in d.items() if "error" in by]
    if errors:
        lines += ["", "Failed measurements:"] + [f"- {m} at {int(n):,} items: {e}" for n, m, e in errors]
    lines += ["", "The growth exponent is the least-squares slope of log(figure) on log(items): 1.0 is linear, 0 flat, "
              "-1.0 means a per-user cost that grows linearly.", ""]
    lines += [f"![{name}](scaling_{name}.png)" for name, _, _ in PLOTS]
    lines += ["", "<!-- end generated -->"]
    block = "\n".join(lines)
    start, end = "<!-- generated by jobs/scale.py", "<!-- end generated -->"
    text = doc.read_text() if doc.exists() else "# How ttds's costs grow\n\n" + start + " -->\n" + end + "\n"
    if start in text and end in text:
        a = text.index(start)
        b = text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def _fmt(v: float) -> str:
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="child entry of the scaling benchmark (jobs/scale.py is the user's)")
    p.add_argument("--one", choices=MEASURES, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--config", required=True, help="ScaleConfig as JSON")
    a = p.parse_args(argv)
    cfg = ScaleConfig(**json.loads(a.config))
    _child(cfg, a.one, a.size, _work(cfg, a.size) / f"{a.one}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
