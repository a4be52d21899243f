"""Add items to a trained model without retraining: semantic IDs for unseen items from their text.

A catalogue operation on a model folder (load the model, encode text, extend its ID table and
item rows, write the next version the Serve app rolls out), so it lives with serving, above
`index` (the table and tower it extends) and `llm` (the model and the text encoder).

Why this works only for text-derived IDs: the item tower maps an item's input X to its codes.
When X is the item's text vector, a new item's X can be computed from its text alone, so the
trained tower gives it codes that sit beside similar trained items, and the LLM can generate
its ID. A model whose X is collaborative (or text + collaborative) needs interactions to build
X, which a new item does not have: it is refused.

Steps (`extend_model`):
  1. read the new items (Amazon metadata lines: `asin` + title/description/brand/category; bad
     records go to `rejects.jsonl` with file and line, as in data preparation); ids the model
     already knows are refused;
  2. find the model's own text encoder: the candidate (the model's backbone, or the text backbone
     its config names) that reproduces the saved item X on a sample of trained items; the same
     fit recovers X's standardisation (centre, scale), so new X lies in the tower's input space;
  3. run the item tower; a tower trained with the balanced last level gives a new item the
     nearest last-level code no item with the same prefix holds (the training rule, extended);
  4. append the rows to the ID table and recompute suffixes with the training rule
     (`collisions.assign_suffixes`, row order: trained items first, so their suffixes keep);
     a trained item whose unique code a new item now shares gains a suffix: counted, reported;
  5. grow the per-item weights: the item head / separate item embedding get one row per new
     item, initialised as the mean of the rows of the trained items sharing its longest code
     prefix (its semantic neighbours; the mean of all rows when none shares a first code);
  6. write a NEW model folder (the old one untouched): a copy with the extended table, X, heads,
     a copy of the corpus whose items table lists the new items (the catalogue the recommender
     reads titles from), and `ttds.json` recording the catalogue version and its parent.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np

from ttds.data import schema
from ttds.data.corpus import Corpus
from ttds.data.readers._common import iter_lines, parse_record
from ttds.data.readers.amazon import read_meta
from ttds.data.rejects import RejectLog
from ttds.index.rq import _sq_dists
from ttds.index.table import SemanticIDTable, suffix_token
from ttds.llm.model_io import load_model

log = logging.getLogger(__name__)

__all__ = ["ExtendConfig", "ExtendResult", "extend_model", "read_new_items", "place_items", "grow_rows", "CatalogueError"]

HEAD_RULE = ("new rows = mean of the trained items' rows that share the new item's longest code prefix "
             "(all rows when none shares its first code); never trained on the new item")


class CatalogueError(ValueError):
    """The items or the model cannot be used (a known id, a non-text model, no text): a user's problem."""


@dataclass
class ExtendConfig:
    """`out_dir` "" = a sibling `<model>-v<version>`; `sample` trained items re-encoded to find and
    check the encoder; `tolerance` the largest relative error that still counts as the same encoder
    (X built in bf16 on a GPU and re-encoded in fp32 here differs by ~1e-2; another encoder by ~1)."""

    model_dir: str
    items_path: str = ""
    out_dir: str = ""
    sample: int = 128
    tolerance: float = 0.1
    max_reject_rate: float = 0.5


@dataclass
class ExtendResult:
    out_dir: Path
    added: list[int]  # new item ids (dense, after the trained ones)
    keys: list[str]  # their item keys
    version: int
    encoder: str
    encoder_error: float
    old_ids_changed: list[int] = field(default_factory=list)  # trained items that gained a suffix
    rejects: int = 0


# ----------------------------------------------------------------------------- input
def read_new_items(path: str | Path, known_keys: set[str], rejects) -> dict[str, dict[str, str]]:
    """{item key: text fields} of the new-items file, read by the Amazon metadata reader (one JSON
    object per line: `asin`, title, description, brand, category). Items without any text go to
    `rejects` (missing_field, with their line): nothing can place them. Known keys raise."""
    items = read_meta(path, rejects)
    empty = [k for k, v in items.items() if not any(v.values())]
    if empty:
        lines = {}
        for lineno, line in iter_lines(path):
            rec = parse_record(line)
            if rec is not None and str(rec.get("asin", "")).strip() in empty:
                lines.setdefault(str(rec["asin"]).strip(), (lineno, line))
        for k in empty:
            lineno, line = lines.get(k, (0, k))
            rejects.add("missing_field", path, lineno, f"item {k!r} has no title, description, brand or category: "
                        "a new item is placed by its text", line)
            del items[k]
    known = [k for k in items if k in known_keys]
    if known:
        shown = ", ".join(repr(k) for k in known[:10]) + (" ..." if len(known) > 10 else "")
        raise CatalogueError(f"{len(known)} item(s) in {path} are already in the model's catalogue: {shown}; "
                             "send only new items (changing a known item's text is a retraining matter)")
    return items


# ----------------------------------------------------------------------------- the encoder
def _candidates(lm, corpus) -> list[tuple[str, object]]:
    """(name, loader) of the text encoders the model may have used, cheapest first."""
    from ttds.llm.backbone import BackboneConfig, load_backbone  # transformers + peft: loaded only when items are added

    cfg = lm.meta.get("config") or {}
    names = [((cfg.get("index") or {}).get("features") or {}).get("text_backbone"), (cfg.get("backbone") or {}).get("name")]
    out: list[tuple[str, object]] = [("the model's backbone", lambda: (lm.model.backbone, lm.tokenizer))]
    for name in dict.fromkeys(n for n in names if n):
        out.append((f"text backbone {name!r}", lambda name=name: load_backbone(BackboneConfig(name=name, dtype="float32"), corpus.item_titles)))
    return out


def _fit_standardisation(raw: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(centre, scale, relative error) with normalise(raw) ~= centre + scale * x, the inverse of
    `features.build._standardise` (which also produced x), least squares over the sample."""
    n = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-8)
    nc, xc = n - n.mean(0), x - x.mean(0)
    scale = float((nc * xc).sum() / max(float((xc * xc).sum()), 1e-12))
    centre = (n - scale * x).mean(0)
    err = float(np.linalg.norm(n - centre - scale * x) / max(float(np.linalg.norm(nc)), 1e-12))
    return centre.astype(np.float32), scale, err


def text_vectors(lm, corpus, item_x: np.ndarray, texts: list[str], sample: int, tolerance: float) -> tuple[np.ndarray, str, float]:
    """X rows of `texts` in the saved X's space, by the encoder that reproduces the saved X."""
    from ttds.llm.backbone import encode_texts  # transformers + peft: loaded only when items are added

    max_length = int((((lm.meta.get("config") or {}).get("index") or {}).get("features") or {}).get("text_max_length", 96))
    rows = np.random.default_rng(0).choice(len(item_x), min(sample, len(item_x)), replace=False)
    old_texts = [corpus.item_texts[i] for i in rows]
    tried, best = [], None
    for name, load in _candidates(lm, corpus):  # every candidate: the closest wins (a fine-tuned backbone may come near)
        model, tok = load()
        raw = encode_texts(model, tok, old_texts, max_length=max_length)
        if raw.shape[1] != item_x.shape[1]:
            tried.append(f"{name}: {raw.shape[1]} dims, X has {item_x.shape[1]}")
            continue
        centre, scale, err = _fit_standardisation(raw, item_x[rows])
        tried.append(f"{name}: relative error {err:.3g}")
        if err <= tolerance and (best is None or err < best[0]):
            best = (err, name, model, tok, centre, scale)
        if err < 1e-4:
            break  # exact: no need to load the others
    if best is not None:
        err, name, model, tok, centre, scale = best
        new = encode_texts(model, tok, texts, max_length=max_length)
        new = new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-8)
        return ((new - centre) / scale).astype(np.float32), name, err
    raise CatalogueError("no text encoder reproduces this model's item X (" + "; ".join(tried) + "); new items would land "
                         "where the tower was never trained, so they are refused")


# ----------------------------------------------------------------------------- codes and IDs
def _balanced_codes(tower, x, table: SemanticIDTable) -> np.ndarray:
    """Codes of new rows: nearest codes, then (balanced last level) the nearest last code that no
    item sharing the prefix holds yet, neither a trained one nor a new one placed before."""
    with torch.no_grad():
        if getattr(tower.config, "last_level", "nearest") != "balanced" or type(tower).__name__ != "RQTokenizer":
            return tower.encode(x).numpy()  # K-way / MoC towers: their own rule, row by row
        codes = tower.encode(x, last_level="nearest").numpy()
        books = tower.quantizer.codebooks.detach()
        z = tower.latents(x)
        prefix_q = sum(books[lv][torch.as_tensor(codes[:, lv])] for lv in range(codes.shape[1] - 1)) if codes.shape[1] > 1 else 0
        dists = _sq_dists(z - prefix_q, books[-1]).numpy()
    taken: dict[tuple[int, ...], set[int]] = {}
    for row in table.codes.tolist():
        taken.setdefault(tuple(row[:-1]), set()).add(row[-1])
    for i in range(len(codes)):
        used = taken.setdefault(tuple(codes[i, :-1].tolist()), set())
        for c in np.argsort(dists[i], kind="stable"):
            if int(c) not in used:
                codes[i, -1] = int(c)
                break  # a full prefix group keeps the nearest code: the suffix separates it
        used.add(int(codes[i, -1]))
    return codes


def place_items(tower, x: np.ndarray, table: SemanticIDTable, new_ids: np.ndarray, known_tokens: set[str]) -> tuple[SemanticIDTable, list[int]]:
    """The table with `new_ids` appended (codes from `tower`), suffixes by the training rule; and the
    trained items whose ID changed (they gained a suffix). Refuses a suffix the LLM has no token for."""
    codes = _balanced_codes(tower, torch.as_tensor(x, dtype=torch.float32), table)
    ext = SemanticIDTable.from_codes("item", np.concatenate([table.ids, new_ids]), np.concatenate([table.codes, codes]),
                                     table.codebook_size, table.meta)
    missing = sorted({int(s) for s in ext.suffix if s >= 0 and suffix_token(int(s)) not in known_tokens})
    if missing:
        raise CatalogueError(f"the new items make collision sets that need suffix token(s) {[suffix_token(s) for s in missing]}, "
                             "which the model's vocabulary lacks; retrain with a larger index.max_suffix_tokens")
    ext.assert_unique()
    n = len(table)
    changed = np.flatnonzero((ext.suffix[:n] != table.suffix) | (ext.codes[:n] != table.codes).any(1))
    return ext, [int(table.ids[i]) for i in changed]


def grow_rows(weight: np.ndarray, old_codes: np.ndarray, new_codes: np.ndarray) -> np.ndarray:
    """`weight` [n_old, H] with one row per new item appended (`HEAD_RULE`)."""
    rows = []
    for c in new_codes:
        pick = None
        for depth in range(len(c), 0, -1):
            same = (old_codes[:, :depth] == c[:depth]).all(1)
            if same.any():
                pick = same
                break
        rows.append(weight[pick].mean(0) if pick is not None else weight.mean(0))
    return np.concatenate([weight, np.asarray(rows, dtype=weight.dtype).reshape(-1, weight.shape[1])])


# ----------------------------------------------------------------------------- the new folder
def _catalogue(meta: dict) -> dict:
    return dict(meta.get("catalogue") or {"version": 1, "added_items": 0})


def default_out(model_dir: Path, version: int) -> Path:
    """`<model>-v<version>` beside the parent (a parent named `<model>-v<k>` gives `<model>-v<version>`)."""
    return model_dir.with_name(f"{re.sub(r'-v[0-9]+$', '', model_dir.name)}-v{version}")


def _write_corpus(corpus, out: Path, keys: list[str], fields: list[dict[str, str]]) -> Path:
    """A copy of `corpus` whose items table lists the new items after the trained ones (ids dense)."""
    out.mkdir(parents=True)
    for f in corpus.root.iterdir():
        if f.is_file() and f.name not in ("items.parquet", "manifest.json"):
            shutil.copy2(f, out / f.name)
    n = corpus.n_items
    extra = {"item_id": np.arange(n, n + len(keys), dtype=np.int64), "item_key": keys,
             **{t: [r.get(t) or None for r in fields] for t in schema.TEXT_FIELDS}}
    items = pa.concat_tables([corpus.items.cast(schema.ITEMS), pa.Table.from_pydict(extra, schema=schema.ITEMS)])
    pq.write_table(items, out / "items.parquet")
    manifest = dict(corpus.manifest)
    manifest["counts"] = {**manifest["counts"], "items": int(items.num_rows)}
    manifest["added_items"] = int(manifest.get("added_items", 0)) + len(keys)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def extend_model(cfg: ExtendConfig, items: dict[str, dict[str, str]] | None = None) -> ExtendResult:
    """Write a new model version with the items of `cfg.items_path` (or `items`, {key: text fields})."""
    src = Path(cfg.model_dir).expanduser().resolve()
    lm = load_model(src)
    meta = dict(lm.meta)
    feats = src / "features.safetensors"
    if not feats.exists():
        raise CatalogueError(f"{src} has no features.safetensors: a new item's X cannot be built")
    with safe_open(str(feats), framework="numpy") as fh:
        finfo = dict(fh.metadata() or {})
    f = load_np(str(feats))
    item_x, text_dims, source = f["item_x"], int(finfo.get("text_dims", 0) or 0), finfo.get("source", "unknown")
    if source != "text" or text_dims != item_x.shape[1]:
        raise CatalogueError(f"{src}: item X is {source!r} ({text_dims} of {item_x.shape[1]} dims from text); only a model whose item X "
                             "is text alone (index.features.source=text) can place unseen items: the rest of X needs interactions "
                             "that a new item does not have yet")
    corpus = Corpus.open(meta.get("corpus_dir", ""))
    if corpus.n_items != len(lm.items) or not np.array_equal(lm.items.ids, np.arange(len(lm.items))):
        raise CatalogueError(f"{src}: its corpus {corpus.root} lists {corpus.n_items} items, its ID table {len(lm.items)}")
    rejects = RejectLog()
    known = set(corpus.items.column("item_key").to_pylist())
    if items is None:
        items = read_new_items(cfg.items_path, known, rejects)
        if rejects.rate() > cfg.max_reject_rate:
            raise CatalogueError(f"{rejects.rate():.0%} of the records in {cfg.items_path} were rejected\n{rejects.summary()}")
    else:
        bad = [k for k in items if k in known]
        if bad:
            raise CatalogueError(f"{len(bad)} item(s) are already in the catalogue: {bad[:10]}")
    if not items:
        raise CatalogueError(f"no usable new items in {cfg.items_path or 'the input'}\n{rejects.summary()}")
    cat = _catalogue(meta)
    version = int(cat["version"]) + 1
    out = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else default_out(src, version)
    if out.exists() and any(out.iterdir()):
        raise CatalogueError(f"{out} exists and is not empty: choose another --out (versions are never overwritten)")

    keys = list(items)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    new_corpus = Corpus.open(_write_corpus(corpus, tmp / "corpus", keys, [items[k] for k in keys]))
    texts = new_corpus.item_texts[corpus.n_items:]
    new_x, encoder, err = text_vectors(lm, corpus, item_x, texts, cfg.sample, cfg.tolerance)
    new_ids = np.arange(corpus.n_items, corpus.n_items + len(keys), dtype=np.int64)
    table, changed = place_items(lm.model.towers.item, new_x, lm.items, new_ids, set(lm.tokenizer.get_vocab()))

    for p in src.iterdir():  # a plain copy: files written below must never be the parent's (no hard links)
        if p.name in ("corpus", "rejects.jsonl"):
            continue
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
    table.save(tmp)
    save_np({**{k: v for k, v in f.items() if k != "item_x"}, "item_x": np.concatenate([item_x, new_x])}, str(tmp / "features.safetensors"), metadata=finfo)
    new_codes = table.codes[len(lm.items):]
    for name in ("item_head.safetensors", "item_embedding.safetensors"):
        if (src / name).exists():
            w = load_np(str(src / name))
            save_np({k: grow_rows(v, lm.items.codes, new_codes) for k, v in w.items()}, str(tmp / name))
    if (src / "item_embedding.json").exists():
        info = json.loads((src / "item_embedding.json").read_text())
        (tmp / "item_embedding.json").write_text(json.dumps({**info, "n_items": len(table)}))
    meta["corpus_dir"] = str(out / "corpus")
    meta["catalogue"] = {
        "version": version, "parent": str(src), "parent_version": int(cat["version"]),
        "added_items": int(cat.get("added_items", 0)) + len(keys), "items": len(table), "new_ids": [int(new_ids[0]), int(new_ids[-1])],
        "encoder": encoder, "encoder_relative_error": err, "old_ids_changed": changed,
        "item_rows": HEAD_RULE if (src / "item_head.safetensors").exists() or (src / "item_embedding.safetensors").exists() else None,
        "items_file": str(cfg.items_path) if cfg.items_path else None,
    }
    (tmp / "ttds.json").write_text(json.dumps(meta, indent=2, default=str))
    if rejects.entries:
        rejects.write(tmp / "rejects.jsonl")
    tmp.rename(out)
    log.info("catalogue v%d: %d new items -> %s (encoder %s, error %.2g; %d trained IDs gained a suffix)",
             version, len(keys), out, encoder, err, len(changed))
    return ExtendResult(out, new_ids.tolist(), keys, version, encoder, err, changed, len(rejects.entries))
