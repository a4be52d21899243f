"""Driver of the TTDS recommender job: tokenizer warm-up → Ray Train → test evaluation.

Output folder (runs/train_ttds/<timestamp>/ by default):
  config.yaml         resolved config
  tokenizer/          the warm-up tokenizer run (weights, ID tables, features, metrics)
  model/              the best model by validation NDCG@10 (model_io layout: weights + ID tables)
  ray_train/          Ray Train checkpoints (resume: re-run with the same --output_dir)
  metrics.json        test metrics, popularity reference, per-epoch history, wall time, memory
  results.md          the test table
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import time
from pathlib import Path

import numpy as np

from ttds.config import save_config, to_dict
from ttds.configs import TokenizerJobConfig, TTDSJobConfig
from ttds.data.corpus import Corpus
from ttds.data.resolve import open_or_prepare
from ttds.data.task_examples import write_task_rows
from ttds.train.launch import run_trainer
from ttds.train.tokenizer_job import default_out, load_features, save_features, train_tokenizer

log = logging.getLogger(__name__)


def popularity_metrics(corpus: Corpus, split: str = "test") -> dict:
    from ttds.eval.metrics import ranking_metrics

    _, _, targets = corpus.eval_arrays(split)
    top = np.argsort(-corpus.item_popularity(), kind="stable")[:10]
    return ranking_metrics(np.tile(top, (len(targets), 1)), targets)


def ensure_tokenizer(cfg: TTDSJobConfig, corpus: Corpus, out: Path) -> Path:
    """The warm-up stage: train (or reuse) the twin-tower tokenizer; make sure X exists."""
    if cfg.tokenizer_dir:
        tok_dir = Path(cfg.tokenizer_dir)
        if not (tok_dir / "item_ids.parquet").exists():
            raise FileNotFoundError(f"tokenizer_dir {tok_dir} holds no item_ids.parquet; train one with jobs/train_tokenizer.py")
    elif (out / "tokenizer" / "metrics.json").exists():
        tok_dir = out / "tokenizer"  # a resumed run keeps the tokenizer it started with
    else:
        index = dataclasses.replace(cfg.index)
        index.features = dataclasses.replace(index.features, text_backbone=cfg.backbone.name)
        tcfg = TokenizerJobConfig(data=cfg.data, index=index, train=cfg.train, output_dir=str(out / "tokenizer"))
        tok_dir = train_tokenizer(tcfg, corpus).out_dir
    if not (tok_dir / "features.safetensors").exists():
        from ttds.features.build import build_features

        save_features(build_features(corpus, cfg.index.features), tok_dir / "features.safetensors")
    if not (tok_dir / "tokenizer.safetensors").exists():
        # static indexers (lsh/random/precomputed) have no trained towers: start fresh ones
        from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
        from ttds.train import checkpoint as ckpt_io

        f = load_features(tok_dir / "features.safetensors")
        towers = cfg.index.towers(f.item_x.shape[1], f.user_x.shape[1] if cfg.index.user_tower else None)
        model = TwinTowerTokenizer(TwinTowerConfig.from_dict(towers))
        ckpt_io.save_state(tok_dir, model.state_dict(), {"towers": towers, "epoch": -1}, "tokenizer")
    return tok_dir


def check_config(cfg: TTDSJobConfig) -> None:
    """Fail before any work starts on values that would only break hours later."""
    problems = []
    if cfg.eval.beam_width < cfg.eval.top_k:
        problems.append(f"eval.beam_width={cfg.eval.beam_width} must be >= eval.top_k={cfg.eval.top_k}")
    if cfg.eval.top_k < 10:
        problems.append("eval.top_k must be >= 10 (HR@10 / NDCG@10 are reported)")
    from ttds.index.kinds import INDEX_KINDS

    if cfg.index.kind not in INDEX_KINDS:
        problems.append(f"index.kind={cfg.index.kind!r}: expected one of {', '.join(INDEX_KINDS)}")
    if cfg.backbone.finetune not in ("auto", "lora", "full"):
        problems.append(f"backbone.finetune={cfg.backbone.finetune!r}: expected auto, lora or full")
    if cfg.index.reencode_text not in ("auto", "true", "false"):
        problems.append(f"index.reencode_text={cfg.index.reencode_text!r}: expected auto, true or false")
    from ttds.index.table import REINDEX_RULES

    if cfg.index.reindex_rule not in REINDEX_RULES:
        problems.append(f"index.reindex_rule={cfg.index.reindex_rule!r}: expected one of {', '.join(REINDEX_RULES)}")
    from ttds.train.lr_schedule import schedule_problem

    problems += [p for p in [schedule_problem(cfg.optim.lr_schedule)] if p]
    if not 0.0 <= cfg.optim.min_lr_ratio <= 1.0:
        problems.append(f"optim.min_lr_ratio={cfg.optim.min_lr_ratio}: expected a value in [0, 1]")
    from ttds.train.weight_average import span_problem

    ema_problem = span_problem(cfg.optim.ema_decay, cfg.optim.ema_epochs, "optim")
    if ema_problem:
        problems.append(ema_problem)
    elif (cfg.optim.ema_decay > 0 or cfg.optim.ema_epochs > 0) and cfg.train.zero_stage >= 3:
        problems.append("optim.ema_decay / ema_epochs > 0 needs train.zero_stage <= 2 (ZeRO-3 partitions the weights it averages)")
    if not 0.0 <= cfg.backbone.dropout < 1.0:
        problems.append(f"backbone.dropout={cfg.backbone.dropout}: expected a value in [0, 1)")
    if not 0.0 <= cfg.loss.label_smoothing < 1.0:
        problems.append(f"loss.label_smoothing={cfg.loss.label_smoothing}: expected a value in [0, 1)")
    from ttds.llm.item_embedding import ITEM_EMBEDDING_MODES

    if cfg.backbone.item_embedding not in ITEM_EMBEDDING_MODES:
        problems.append(f"backbone.item_embedding={cfg.backbone.item_embedding!r}: expected one of {', '.join(ITEM_EMBEDDING_MODES)}")
    elif cfg.backbone.item_embedding == "tied" and cfg.loss.item_head_weight <= 0:
        problems.append("backbone.item_embedding=tied shares the item head's vectors: it needs loss.item_head_weight > 0")
    if cfg.loss.item_head_weight < 0:
        problems.append(f"loss.item_head_weight={cfg.loss.item_head_weight}: expected a value >= 0")
    from ttds.eval.distributed import RANK_BY

    if cfg.eval.rank_by not in RANK_BY:
        problems.append(f"eval.rank_by={cfg.eval.rank_by!r}: expected one of {', '.join(RANK_BY)}")
    elif cfg.eval.rank_by == "item_head" and cfg.loss.item_head_weight <= 0:
        problems.append("eval.rank_by=item_head needs loss.item_head_weight > 0 (the item head is trained only then)")
    if cfg.train.zero_stage not in (0, 1, 2, 3):
        problems.append(f"train.zero_stage={cfg.train.zero_stage}: expected 0-3")
    for name in ("epochs", "batch_size"):
        if getattr(cfg.optim, name) < 1:
            problems.append(f"optim.{name} must be >= 1")
    if problems:
        raise ValueError("invalid config: " + "; ".join(problems))


def worker_config(cfg: TTDSJobConfig, corpus: Corpus, tok_dir: Path, out: Path) -> dict:
    from ttds.index.table import SemanticIDTable

    f = load_features(tok_dir / "features.safetensors")
    towers = json.loads((tok_dir / "tokenizer.json").read_text())["towers"]
    items = SemanticIDTable.load(tok_dir, "item")
    has_users = cfg.index.user_tower and towers.get("user") is not None and (tok_dir / "user_ids.parquet").exists()
    if not has_users:
        towers["user"] = None
    from ttds.index.kinds import LEARNED_KINDS

    static = cfg.index.kind not in LEARNED_KINDS  # rq, kway_masked, moc towers learn jointly; lsh/random/precomputed do not
    rates = {
        "next_item": cfg.tasks.next_item,
        "user_pred": cfg.tasks.user_pred if (cfg.tasks.high_order and has_users) else 0.0,
        "comment": cfg.tasks.comment if cfg.tasks.high_order else 0.0,
        "text2id": cfg.tasks.text2id if cfg.tasks.high_order else 0.0,
        "id2text": cfg.tasks.id2text if cfg.tasks.high_order else 0.0,
    }
    warmup = cfg.optim.warmup_epochs if cfg.optim.warmup_epochs >= 0 else (0 if cfg.backbone.name == "tiny-llama" else 1)
    users_max_suffix = SemanticIDTable.load(tok_dir, "user").max_suffix if has_users else 0
    return {
        "corpus_dir": str(corpus.root.resolve()),
        "tokenizer_dir": str(tok_dir.resolve()),
        "best_dir": str((out / "model").resolve()),
        "history_path": str((out / "history.jsonl").resolve()),
        "towers": towers,
        "backbone": dataclasses.asdict(cfg.backbone),
        "x_dim": int(f.item_x.shape[1]),
        "text_dims": int(f.text_dims),
        "text_source": "text" in f.source and (
            cfg.index.reencode_text == "true" or (cfg.index.reencode_text == "auto" and cfg.backbone.name != "tiny-llama")
        ),
        "tower_lr": cfg.optim.lr * cfg.index.joint_lr_scale,
        "text_max_length": cfg.index.features.text_max_length,
        "source": f.source,
        "item_levels": items.levels,
        "user_levels": towers["user"]["levels"] if has_users else 0,
        "codebook_size": items.codebook_size,
        "suffixes": max(cfg.index.max_suffix_tokens, items.max_suffix + 1, users_max_suffix + 1),
        "max_history": cfg.data.max_history,
        "max_len": cfg.backbone.max_len,
        "next_item_user_id": cfg.tasks.user_id_in_next_item and has_users,
        "rates": rates,
        "dynamic": cfg.index.dynamic and not static,
        "reindex_every": max(1, cfg.index.reindex_every),
        "reindex_rule": cfg.index.reindex_rule,
        "dmvae": cfg.loss.dmvae,
        "alpha": cfg.loss.alpha,
        "beta": cfg.loss.beta if not static else 0.0,
        "id_batch": cfg.loss.id_batch,
        "retrieval_weight": cfg.loss.retrieval_weight,
        "retrieval_temperature": cfg.loss.retrieval_temperature,
        "retrieval_batch": cfg.loss.retrieval_batch,
        "label_smoothing": cfg.loss.label_smoothing,
        "item_head_weight": cfg.loss.item_head_weight,
        "item_head_negatives": cfg.loss.item_head_negatives,
        "time_budget_s": cfg.optim.time_budget_s,
        "epochs": cfg.optim.epochs,
        "batch_size": cfg.optim.batch_size,
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay,
        "ema_decay": cfg.optim.ema_decay,
        "lr_schedule": cfg.optim.lr_schedule,
        "min_lr_ratio": cfg.optim.min_lr_ratio,
        "warmup_epochs": warmup,
        "patience": cfg.optim.patience,
        "seed": cfg.optim.seed,
        "zero_stage": cfg.train.zero_stage,
        "offload": cfg.train.offload,
        "eval": dataclasses.asdict(cfg.eval),
        "job_config": to_dict(cfg),
    }


def ema_decay_from_epochs(cfg: TTDSJobConfig, rows: Path) -> float:
    """optim.ema_epochs as the per-step decay the workers use (said in the log, kept in the result)."""
    import pyarrow.parquet as pq

    from ttds.train.weight_average import decay_for_epochs, steps_per_epoch

    n_rows = pq.ParquetFile(rows).metadata.num_rows
    steps = steps_per_epoch(n_rows, cfg.optim.batch_size, cfg.train.num_workers)
    decay = decay_for_epochs(cfg.optim.ema_epochs, n_rows, cfg.optim.batch_size, cfg.train.num_workers)
    log.info("optim.ema_epochs=%g: weight average decay %.6f (%d steps per epoch per worker)", cfg.optim.ema_epochs, decay, steps)
    return decay


def peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(self_kb, child_kb) / 1024, 1)


def train_ttds(cfg: TTDSJobConfig) -> dict:
    import ray.data

    from ttds.eval.distributed import evaluate_model_dir
    from ttds.eval.per_user import PER_USER_FILE
    from ttds.runtime import init_ray
    from ttds.train.ttds_worker import ttds_worker

    check_config(cfg)
    t0 = time.time()
    init_ray()
    corpus = open_or_prepare(cfg.data.corpus, cfg.data.seed)
    out = Path(cfg.output_dir) if cfg.output_dir else default_out("train_ttds")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tok_dir = ensure_tokenizer(cfg, corpus, out)
    t_tok = time.time() - t0
    wc = worker_config(cfg, corpus, tok_dir, out)
    tasks = [t for t, r in wc["rates"].items() if r > 0]
    rows = write_task_rows(corpus, out / "data", tasks, cfg.data.max_history)
    if cfg.optim.ema_epochs > 0:
        wc["ema_decay"] = ema_decay_from_epochs(cfg, rows)
    ds = ray.data.read_parquet(str(rows))
    result = run_trainer(ttds_worker, wc, cfg.train, out, "ray_train", datasets={"train": ds}, score_attribute=None)
    if result.error:
        raise result.error
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()] if (out / "history.jsonl").exists() else []
    t_train = time.time() - t0 - t_tok
    templates = list(range(3)) if cfg.eval.templates == 0 else list(range(cfg.eval.templates))
    t1 = time.time()
    test = evaluate_model_dir(str(out / "model"), corpus, "test", templates, cfg.eval.beam_width, cfg.eval.top_k, cfg.eval.test_users, cfg.eval.workers, cfg.eval.batch_size,
                              use_gpu=cfg.train.use_gpu, per_user_path=out / PER_USER_FILE, exclude_seen=cfg.eval.exclude_seen, rank_by=cfg.eval.rank_by)
    pop = test.pop("popularity")  # same users as the TTDS row
    metrics = {
        "corpus": corpus.name,
        "source": wc["source"],
        "test": test,
        "popularity_test": pop,
        "history": history,
        "best_epoch": json.loads((out / "model" / "ttds.json").read_text())["epoch"],
        "wall_s": {"tokenizer": round(t_tok, 1), "train": round(t_train, 1), "test_eval": round(time.time() - t1, 1), "total": round(time.time() - t0, 1)},
        "peak_rss_mb": peak_rss_mb(),
        "weight_average_decay": wc["ema_decay"],  # per step; from optim.ema_epochs when that is set
        "config": to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    (out / "results.md").write_text(results_table(corpus.name, {"TTDS": test, "Popularity": pop}))
    metrics["out_dir"] = str(out)
    return metrics


def results_table(dataset: str, systems: dict[str, dict]) -> str:
    keys = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"]
    best = {k: max(s.get(k, 0.0) for s in systems.values()) for k in keys}
    lines = [f"# {dataset}: full-ranking leave-one-out test", "", "| system | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, s in systems.items():
        cells = [f"**{s[k]:.4f}**" if s[k] == best[k] else f"{s[k]:.4f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
