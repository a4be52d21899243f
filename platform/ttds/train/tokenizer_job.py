"""Driver of the tokenizer job: features → (Ray Train RQ | static indexer) → ID tables.

Output folder:
  features.safetensors      item_x, user_x (the inputs X; reused by the recommender)
  tokenizer.safetensors     tower weights (learned kinds: rq | kway_masked | moc) + tokenizer.json (tower config, epoch)
  item_ids.parquet/.json    the item semantic-ID table (the contract with training/serving)
  user_ids.parquet/.json    the user table (when the user tower is on)
  metrics.json              collision rate before suffix, codebook usage per level, recon error, diagnostics
  diagnostics.json          NMI of codes with item categories, code-embedding singular spectra
  code_spectrum.png         the spectra plotted
  config.yaml               the resolved config
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_np, save_file as save_np

from ttds import checkpoint as ckpt_io
from ttds.config import FeatureConfig, IndexConfig, TokenizerJobConfig, save_config, to_dict
from ttds.data.corpus import Corpus
from ttds.data.resolve import open_or_prepare
from ttds.features.build import Features, build_features
from ttds.index.collisions import collision_rate
from ttds.index.diagnostics import index_diagnostics
from ttds.index.kinds import INDEX_KINDS, LEARNED_KINDS
from ttds.index.lsh import LSHIndexer
from ttds.index.precomputed import table_from_arrow
from ttds.index.random_ids import RandomIndexer
from ttds.index.rq import codebook_report, reconstruction_error
from ttds.index.table import SemanticIDTable
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.runtime import init_ray
from ttds.train.launch import run_trainer
from ttds.train.lightgcn import lightgcn_vectors
from ttds.train.tokenizer_worker import TokenizerWork, tokenizer_worker

log = logging.getLogger(__name__)


@dataclass
class TokenizerArtifacts:
    out_dir: Path
    items: SemanticIDTable
    users: SemanticIDTable | None
    metrics: dict
    model: TwinTowerTokenizer | None = None


def default_out(job: str) -> Path:
    return Path("runs") / job / time.strftime("%Y%m%d-%H%M%S")


def make_features(corpus: Corpus, cfg: FeatureConfig) -> Features:
    """The tokenizer inputs X by `cfg.source`, with the train layer's LightGCN trainer at hand."""
    return build_features(corpus, cfg, lightgcn=lightgcn_vectors)


def save_features(f: Features, path: Path) -> None:
    save_np({"item_x": f.item_x, "user_x": f.user_x}, str(path), metadata={"source": f.source, "text_dims": str(f.text_dims)})


def load_features(path: Path) -> Features:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata() or {}
    t = load_np(str(path))
    return Features(item_x=t["item_x"], user_x=t["user_x"], source=meta.get("source", "unknown"), text_dims=int(meta.get("text_dims", 0)))


def nearest_code_collisions(tower, x: np.ndarray) -> dict:
    """Plain nearest-code RQ collisions beside the table's (balanced last level, see ttds.index.balanced)."""
    rule = getattr(getattr(tower, "config", None), "last_level", None)
    if rule is None:  # towers without the rule (K-way, MoC) have nothing to compare
        return {}

    nearest = tower.encode(torch.as_tensor(x), last_level="nearest").numpy()
    return {"last_level": rule, "collision_rate_nearest_code": collision_rate(nearest)}


def index_metrics(table: SemanticIDTable, extra: dict | None = None) -> dict:
    report = codebook_report(table.codes, table.codebook_size)
    table.assert_unique()
    return {
        "entities": len(table),
        "levels": table.levels,
        "codebook_size": table.codebook_size,
        "collision_rate_before_suffix": table.collision_rate,
        "max_suffix": table.max_suffix,
        "unique_after_suffix": True,
        "codebook_usage": report,
        **(extra or {}),
    }


def static_codes(index: IndexConfig, x: np.ndarray, levels: int, corpus: Corpus | None = None) -> np.ndarray:
    if index.kind == "lsh":
        return LSHIndexer(levels, index.codebook_size, index.seed).fit(x).encode(x)
    if index.kind == "random":
        return RandomIndexer(levels, index.codebook_size, index.seed).fit(x).encode(x)
    raise ValueError(f"index.kind must be one of {', '.join(INDEX_KINDS)}, not {index.kind!r}")


def tables_from_model(model: TwinTowerTokenizer, f: Features, index: IndexConfig) -> tuple[SemanticIDTable, SemanticIDTable | None]:
    model.eval()
    item_codes = model.encode_items(torch.as_tensor(f.item_x)).numpy()
    items = SemanticIDTable.from_codes("item", np.arange(len(f.item_x)), item_codes, index.codebook_size, {"source": f.source, "kind": index.kind})
    users = None
    if model.user is not None:
        user_codes = model.encode_users(torch.as_tensor(f.user_x)).numpy()
        users = SemanticIDTable.from_codes("user", np.arange(len(f.user_x)), user_codes, index.codebook_size, {"source": f.source, "kind": index.kind})
    return items, users


def train_rq(f: Features, index: IndexConfig, cfg: TokenizerJobConfig, out: Path) -> tuple[TwinTowerTokenizer, list[dict]]:
    """Train the twin towers with Ray Train + DeepSpeed; returns the final model and history."""
    import ray.data

    towers = index.towers(f.item_x.shape[1], f.user_x.shape[1] if index.user_tower else None)
    work = TokenizerWork(index=index, zero_stage=cfg.train.zero_stage, towers=towers, history_path=str((out / "history.jsonl").resolve()))
    datasets = {"items": ray.data.from_numpy(f.item_x), "items_all": ray.data.from_numpy(f.item_x)}
    split = ["items"]
    if index.user_tower:
        datasets.update({"users": ray.data.from_numpy(f.user_x), "users_all": ray.data.from_numpy(f.user_x)})
        split.append("users")
    result = run_trainer(tokenizer_worker, work, cfg.train, out, "ray_train", datasets=datasets, split_datasets=split)
    if result.error:
        raise result.error
    model = TwinTowerTokenizer(TwinTowerConfig.from_dict(towers))
    with result.checkpoint.as_directory() as d:
        tensors, state = ckpt_io.load_state(d, "tokenizer")
    model.load_state_dict(tensors)
    ckpt_io.save_state(out, model.state_dict(), {"towers": towers, "epoch": state["epoch"]}, "tokenizer")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return model, history


def train_tokenizer(cfg: TokenizerJobConfig, corpus: Corpus | None = None) -> TokenizerArtifacts:
    if cfg.index.kind not in INDEX_KINDS:  # before any work: Ray, corpus preparation
        raise ValueError(f"index.kind must be one of {', '.join(INDEX_KINDS)}, not {cfg.index.kind!r}")
    t0 = time.time()
    init_ray()
    corpus = corpus or open_or_prepare(cfg.data.corpus, cfg.data.seed)
    out = Path(cfg.output_dir) if cfg.output_dir else default_out("train_tokenizer")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    index = cfg.index
    model = None
    history: list[dict] = []
    if index.kind == "precomputed":
        pre = corpus.precomputed_index()
        if pre is None:
            raise ValueError(f"index.kind=precomputed but corpus {corpus.name!r} ships no X.index.json")
        items = table_from_arrow(pre)
        users, f = None, None
    else:
        feats_path = out / "features.safetensors"
        if feats_path.exists():
            f = load_features(feats_path)
        else:
            log.info("building tokenizer inputs X (source=%s)", index.features.source)
            f = make_features(corpus, index.features)
            save_features(f, feats_path)
        if index.kind in LEARNED_KINDS:  # rq | kway_masked | moc: the same Ray Train job, another tower class
            model, history = train_rq(f, index, cfg, out)
            items, users = tables_from_model(model, f, index)
        else:
            items = SemanticIDTable.from_codes("item", np.arange(len(f.item_x)), static_codes(index, f.item_x, index.levels), index.codebook_size, {"kind": index.kind})
            users = None
            if index.user_tower:
                users = SemanticIDTable.from_codes("user", np.arange(len(f.user_x)), static_codes(index, f.user_x, index.user_levels), index.codebook_size, {"kind": index.kind})
    items.save(out)
    if users is not None:
        users.save(out)
    metrics = {
        "corpus": corpus.name,
        "kind": index.kind,
        "source": f.source if f is not None else "precomputed",
        "items": index_metrics(items),
        "users": index_metrics(users) if users is not None else None,
        "history": history,
        "wall_s": round(time.time() - t0, 1),
        "config": to_dict(cfg),
    }
    if model is not None:
        metrics["items"]["recon_error"] = reconstruction_error(model.item, torch.as_tensor(f.item_x))
        if model.user is not None:
            metrics["users"]["recon_error"] = reconstruction_error(model.user, torch.as_tensor(f.user_x))
        metrics["items"].update(nearest_code_collisions(model.item, f.item_x))
        if model.user is not None:
            metrics["users"].update(nearest_code_collisions(model.user, f.user_x))
    metrics["diagnostics"] = diagnostics(out, corpus, items, users, model)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    return TokenizerArtifacts(out, items, users, metrics, model)


def diagnostics(out: Path, corpus: Corpus, items: SemanticIDTable, users: SemanticIDTable | None, model: TwinTowerTokenizer | None) -> dict:
    """NMI with item categories (when the corpus has them) and code-embedding spectra (PNG)."""
    cats = None
    if "categories" in corpus.items.column_names:
        col = corpus.items.column("categories").to_pylist()
        if any(col):
            ids = corpus.items.column("item_id").to_numpy()
            by_id = dict(zip(ids.tolist(), col))
            cats = [by_id.get(int(i)) for i in items.ids.tolist()]
    try:
        return index_diagnostics(out, items, users, cats, model.item if model is not None else None, model.user if model is not None else None)
    except Exception as e:  # diagnostics must never cost a trained tokenizer
        log.warning("index diagnostics failed: %s", e)
        return {"error": str(e)}
