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
from typing import Any, Sequence

from ttds.config import TokenizerJobConfig, TTDSJobConfig, check_config, save_config, to_dict
from ttds.console import stage
from ttds.data.corpus import Corpus
from ttds.data.resolve import open_or_prepare
from ttds.data.task_examples import write_task_rows
from ttds.eval.distributed import evaluate_model_dir
from ttds.eval.per_user import PER_USER_FILE
from ttds.index.kinds import LEARNED_KINDS
from ttds.index.table import SemanticIDTable
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.runtime import init_ray
from ttds.train.launch import run_trainer
from ttds.train.loop import report_line
from ttds.train.profile import PROFILE_FILE
from ttds.train.tokenizer_job import default_out, load_features, make_features, save_features, train_tokenizer
from ttds.train.ttds_worker import TTDSRunFacts, TTDSWork, task_rates, ttds_worker
from ttds.train.weight_average import decay_for_epochs, steps_per_epoch

log = logging.getLogger(__name__)


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
        save_features(make_features(corpus, cfg.index.features), tok_dir / "features.safetensors")
    if not (tok_dir / "tokenizer.safetensors").exists():
        # static indexers (lsh/random/precomputed) have no trained towers: start fresh ones
        from ttds import checkpoint as ckpt_io

        f = load_features(tok_dir / "features.safetensors")
        towers = cfg.index.towers(f.item_x.shape[1], f.user_x.shape[1] if cfg.index.user_tower else None)
        model = TwinTowerTokenizer(TwinTowerConfig.from_dict(towers))
        ckpt_io.save_state(tok_dir, model.state_dict(), {"towers": towers, "epoch": -1}, "tokenizer")
    return tok_dir


def run_facts(cfg: TTDSJobConfig, corpus: Corpus, tok_dir: Path, out: Path) -> TTDSRunFacts:
    """What the workers need beside the config, read from the tokenizer folder (ema_decay is
    optim.ema_decay here; `train_ttds` sets it from optim.ema_epochs once the rows exist)."""
    f = load_features(tok_dir / "features.safetensors")
    towers = json.loads((tok_dir / "tokenizer.json").read_text())["towers"]
    items = SemanticIDTable.load(tok_dir, "item")
    has_users = cfg.index.user_tower and towers["user"] is not None and (tok_dir / "user_ids.parquet").exists()
    if not has_users:
        towers["user"] = None
    users_max_suffix = SemanticIDTable.load(tok_dir, "user").max_suffix if has_users else 0
    static = cfg.index.kind not in LEARNED_KINDS  # rq, kway_masked, moc towers learn jointly; lsh/random/precomputed do not
    return TTDSRunFacts(
        corpus_dir=str(corpus.root.resolve()),
        tokenizer_dir=str(tok_dir.resolve()),
        best_dir=str((out / "model").resolve()),
        history_path=str((out / "history.jsonl").resolve()),
        towers=towers,
        has_users=bool(has_users),
        x_dim=int(f.item_x.shape[1]),
        text_dims=int(f.text_dims),
        source=f.source,
        text_source="text" in f.source and (
            cfg.index.reencode_text == "true" or (cfg.index.reencode_text == "auto" and cfg.backbone.name != "tiny-llama")
        ),
        item_levels=items.levels,
        user_levels=towers["user"]["levels"] if has_users else 0,
        codebook_size=items.codebook_size,
        suffixes=max(cfg.index.max_suffix_tokens, items.max_suffix + 1, users_max_suffix + 1),
        warmup_epochs=cfg.optim.warmup_epochs if cfg.optim.warmup_epochs >= 0 else (0 if cfg.backbone.name == "tiny-llama" else 1),
        ema_decay=cfg.optim.ema_decay,
        static_index=static,
        dynamic=cfg.index.dynamic and not static,
        next_item_user_id=cfg.tasks.user_id_in_next_item and bool(has_users),
    )


def ema_decay_from_epochs(cfg: TTDSJobConfig, rows: Path) -> float:
    """optim.ema_epochs as the per-step decay the workers use (said in the log, kept in the result)."""
    import pyarrow.parquet as pq

    n_rows = pq.ParquetFile(rows).metadata.num_rows
    steps = steps_per_epoch(n_rows, cfg.optim.batch_size, cfg.train.num_workers)
    decay = decay_for_epochs(cfg.optim.ema_epochs, n_rows, cfg.optim.batch_size, cfg.train.num_workers)
    log.info("optim.ema_epochs=%g: weight average decay %.6f (%d steps per epoch per worker)", cfg.optim.ema_epochs, decay, steps)
    return decay


def peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(self_kb, child_kb) / 1024, 1)


def train_ttds(cfg: TTDSJobConfig, callbacks: Sequence[Any] = (), profile_steps: int = -1, test: bool = True) -> dict:
    """The whole job; `callbacks` go to Ray Train (a Tune trial passes TuneReportCallback).

    `profile_steps` >= 0 (jobs/train_ttds.py --profile): rank 0 times the stages of every epoch
    (0 = whole epochs, N = the first N steps of each) into PROFILE_FILE in the run folder and
    the job stops after training (no test evaluation: a profile is not a result).
    `test=False` stops at validation (a Tune trial: only the configuration a sweep chooses is tested)."""
    import ray.data

    check_config(cfg)
    t0 = time.time()
    with stage("data", unit="corpus"):
        init_ray()
        corpus = open_or_prepare(cfg.data.corpus, cfg.data.seed)
    out = Path(cfg.output_dir) if cfg.output_dir else default_out("train_ttds")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    with stage("tokenizer", total=cfg.index.epochs, unit="epoch", run="ray_train"):
        tok_dir = ensure_tokenizer(cfg, corpus, out)
    t_tok = time.time() - t0
    facts = run_facts(cfg, corpus, tok_dir, out)
    tasks = [t for t, r in task_rates(cfg, facts.has_users).items() if r > 0]
    rows = write_task_rows(corpus, out / "data", tasks, cfg.data.max_history)
    if cfg.optim.ema_epochs > 0:
        facts.ema_decay = ema_decay_from_epochs(cfg, rows)
    if profile_steps >= 0:
        import pyarrow.parquet as pq

        facts.profile_steps, facts.profile_path = profile_steps, str((out / PROFILE_FILE).resolve())
        facts.task_rows = pq.ParquetFile(rows).metadata.num_rows
        (out / PROFILE_FILE).unlink(missing_ok=True)
    ds = ray.data.read_parquet(str(rows))
    with stage("epochs", total=cfg.optim.epochs, unit="epoch", run="ray_train", describe=lambda m: report_line(m, cfg.optim.epochs)):
        result = run_trainer(ttds_worker, TTDSWork(cfg, facts), cfg.train, out, "ray_train", datasets={"train": ds}, callbacks=callbacks)
    if result.error:
        raise result.error
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()] if (out / "history.jsonl").exists() else []
    t_train = time.time() - t0 - t_tok
    if profile_steps >= 0:
        return {"out_dir": str(out), "history": history, "wall_s": {"tokenizer": round(t_tok, 1), "train": round(t_train, 1)}}
    if not test:
        return _validation_only(cfg, corpus, out, facts, history, t0, t_tok, t_train)
    t1 = time.time()
    test_fig = score_ttds_test(cfg, out / "model", corpus, out / PER_USER_FILE)
    pop = test_fig.pop("popularity")  # same users as the TTDS row
    metrics = {
        "corpus": corpus.name,
        "source": facts.source,
        "test": test_fig,
        "popularity_test": pop,
        "history": history,
        "best_epoch": json.loads((out / "model" / "ttds.json").read_text())["epoch"],
        "wall_s": {"tokenizer": round(t_tok, 1), "train": round(t_train, 1), "test_eval": round(time.time() - t1, 1), "total": round(time.time() - t0, 1)},
        "peak_rss_mb": peak_rss_mb(),
        "weight_average_decay": facts.ema_decay,  # per step; from optim.ema_epochs when that is set
        "config": to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    (out / "results.md").write_text(results_table(corpus.name, {"TTDS": test_fig, "Popularity": pop}))
    metrics["out_dir"] = str(out)
    return metrics


def score_ttds_test(cfg: TTDSJobConfig, model_dir: Path, corpus, per_user_path: Path) -> dict:
    """The test split's figures of the model in `model_dir`, ranked as `cfg.eval` says (its
    templates, beam, ranker, seen filter), with a progress bar; each user's figures to `per_user_path`.
    The one test evaluation of a TTDS model: the job's, and the benchmark's re-scoring (ttds.bench.harness, Harness._rescore)."""
    n_test = len(corpus.eval_arrays("test")[2])
    with stage("ranking", total=min(cfg.eval.test_users or n_test, n_test), unit="user") as bar:
        fig = evaluate_model_dir(str(model_dir), corpus, "test", cfg.eval.template_ids(), cfg.eval.beam_width, cfg.eval.top_k, cfg.eval.test_users,
                                 cfg.eval.workers, cfg.eval.batch_size, use_gpu=cfg.train.use_gpu, per_user_path=per_user_path,
                                 exclude_seen=cfg.eval.exclude_seen, rank_by=cfg.eval.rank_by, new_item_share=cfg.eval.new_item_share)
        bar.set(int(fig.get("users") or bar.total or 0))
    return fig


def _validation_only(cfg: TTDSJobConfig, corpus, out: Path, facts, history: list, t0: float, t_tok: float, t_train: float) -> dict:
    """metrics.json of a run that stopped at validation: no "test" key, the test split unread."""
    metrics = {
        "corpus": corpus.name, "source": facts.source, "test": None, "history": history,
        "best_epoch": json.loads((out / "model" / "ttds.json").read_text())["epoch"],
        "wall_s": {"tokenizer": round(t_tok, 1), "train": round(t_train, 1), "total": round(time.time() - t0, 1)},
        "peak_rss_mb": peak_rss_mb(), "weight_average_decay": facts.ema_decay, "config": to_dict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    return {**metrics, "out_dir": str(out)}


def console_summary(m: dict) -> str:
    """The job's final console table: test figures of TTDS and popularity (same users), then
    where the run folder and Ray's log are."""
    from ttds.console import LOG_FILE, table

    keys = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"]
    w = m["wall_s"]
    return "\n".join([
        f"{m['corpus']}: full-ranking test, {m['test'].get('users', '?')} users (best epoch {m['best_epoch'] + 1} on validation)",
        table({"TTDS": m["test"], "Popularity": m["popularity_test"]}, keys),
        f"wall {w['total']:.0f} s (tokenizer {w['tokenizer']:.0f}, train {w['train']:.0f}, test {w['test_eval']:.0f}), peak RSS {m['peak_rss_mb']:.0f} MB",
        f"run folder: {m['out_dir']} (model/, metrics.json, results.md); Ray's log: {Path(m['out_dir']) / LOG_FILE}",
    ])


def results_table(dataset: str, systems: dict[str, dict]) -> str:
    keys = ["HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10"]
    best = {k: max(s.get(k, 0.0) for s in systems.values()) for k in keys}
    lines = [f"# {dataset}: full-ranking leave-one-out test", "", "| system | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, s in systems.items():
        cells = [f"**{s[k]:.4f}**" if s[k] == best[k] else f"{s[k]:.4f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
