"""Save and load a trained TTDS model folder: the unit that evaluation and serving load.

A model is always saved with the ID tables it was trained on:
  backbone/              peft adapter or full HF model + tokenizer (safetensors)
  towers.safetensors     twin-tower tokenizer weights; towers.json its config
  id_head.safetensors    the L_ID projection head
  item_head.safetensors  the item head (one output vector per item; loss.item_head_weight > 0 only)
  fusion.safetensors/.json  MoC's code-embedding fusion module (index.kind=moc only)
  item_embedding.json/.safetensors  per-item input vectors (backbone.item_embedding; tied: the item head's, no weights file)
  item_ids.parquet/.json user_ids.parquet/.json   the semantic-ID tables in force
  features.safetensors   X of items and users (retrieval fast path, cold start)
  ttds.json              what the prompts need: vocab layout, max history, templates, metrics;
                         stamped with `config_version` and brought to the current one on load
                         (`ttds.config.migrate`), so a folder saved by an older ttds still loads
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ttds.config import migrate_model_meta
from ttds.index.table import SemanticIDTable
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.llm.fusion import load_fusion, save_fusion
from ttds.llm.item_embedding import build_item_embedding
from ttds.llm.model import TTDSModel
from ttds.checkpoint import check_safe
from ttds.llm.prompts import PromptBuilder, TokenTable


@dataclass
class LoadedModel:
    model: TTDSModel
    tokenizer: object
    items: SemanticIDTable
    users: SemanticIDTable | None
    meta: dict
    path: Path


def prompt_builder(lm: LoadedModel):
    """The next-item PromptBuilder a saved model was trained with (its ID tables and prompt layout).

    `next_item_user_id` is in every loaded meta (`load_model` migrates older folders)."""
    vocab = lm.tokenizer.get_vocab()
    users = TokenTable.from_table(lm.users, vocab) if lm.users is not None else None
    # instruction_words: absent from models saved before tasks.instruction_words, which all had the words
    return PromptBuilder(lm.tokenizer, TokenTable.from_table(lm.items, vocab), users, next_item_user_id=bool(lm.meta["next_item_user_id"]),
                         instruction_words=bool(lm.meta.get("instruction_words", True)))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_model(out_dir: str | Path, model: TTDSModel, tokenizer, items: SemanticIDTable, users: SemanticIDTable | None, meta: dict, features_path: Path | None = None) -> Path:
    from ttds.llm.backbone import save_backbone

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_backbone(model.backbone, tokenizer, out / "backbone")
    save_file(_state(model.towers), str(out / "towers.safetensors"))
    (out / "towers.json").write_text(json.dumps(model.towers.config.to_dict(), indent=2))
    save_file(_state(model.id_head), str(out / "id_head.safetensors"))
    if getattr(model, "item_head", None) is not None:
        save_file(_state(model.item_head), str(out / "item_head.safetensors"))
    if getattr(model, "fusion", None) is not None:  # MoC code fusion (ttds.llm.fusion)

        save_fusion(out, model.fusion)
    emb = getattr(model, "item_embedding", None)
    if emb is not None:  # per-item input vectors (ttds.llm.item_embedding)
        (out / "item_embedding.json").write_text(json.dumps({"mode": "tied" if emb.tied else "separate", "levels": emb.levels,
                                                             "codebook_size": emb.codebook_size, "n_items": emb.n_items}))
        if not emb.tied:
            save_file(_state(emb), str(out / "item_embedding.safetensors"))
    items.save(out)
    if users is not None:
        users.save(out)
    elif (out / "user_ids.parquet").exists():
        (out / "user_ids.parquet").unlink()
    if features_path is not None and Path(features_path).exists() and not (out / "features.safetensors").exists():
        import shutil

        shutil.copy(features_path, out / "features.safetensors")
    # stamped with the current version; a key the writer left out gets the behaviour a folder
    # without it always had (what loading the unstamped meta would give: ttds.config.migrate)
    (out / "ttds.json").write_text(json.dumps(migrate_model_meta(meta), indent=2, default=str))
    return out


def load_model(path: str | Path, trainable: bool = False, device: str | torch.device | None = None) -> LoadedModel:
    from ttds.llm.backbone import load_trained

    path = Path(path)
    if not (path / "ttds.json").exists():
        raise FileNotFoundError(f"{path} is not a TTDS model folder (no ttds.json); train one with jobs/train_ttds.py")
    check_safe(path)
    meta = migrate_model_meta(json.loads((path / "ttds.json").read_text()))
    # trainable: fp32 master weights (a GPU run computes in bf16 under autocast, see ttds_worker);
    # inference: the device's dtype (bf16 on CUDA)
    backbone, tokenizer = load_trained(path / "backbone", dtype="float32" if trainable else "auto", is_trainable=trainable)
    towers = TwinTowerTokenizer(TwinTowerConfig.from_dict(json.loads((path / "towers.json").read_text())))
    towers.load_state_dict(load_file(str(path / "towers.safetensors")))
    head_state = load_file(str(path / "id_head.safetensors"))

    item_state = load_file(str(path / "item_head.safetensors")) if (path / "item_head.safetensors").exists() else None
    model = TTDSModel(backbone, towers, head_state["weight"].shape[1], head_state["weight"].shape[0], fusion=load_fusion(path),
                      n_items=item_state["weight"].shape[0] if item_state is not None else 0)
    model.id_head.load_state_dict(head_state)
    if item_state is not None:
        model.item_head.load_state_dict(item_state)
    items = SemanticIDTable.load(path, "item")
    if (path / "item_embedding.json").exists():
        info = json.loads((path / "item_embedding.json").read_text())
        emb = build_item_embedding(info["mode"], info["n_items"], info["levels"], info["codebook_size"], tokenizer, backbone, model.item_head)
        if not emb.tied:
            emb.load_state_dict(load_file(str(path / "item_embedding.safetensors")))
        emb.set_items(items)
        model.set_item_embedding(emb)
    if device is not None:
        model.to(device)
    model.train(trainable)
    users = SemanticIDTable.load(path, "user") if (path / "user_ids.parquet").exists() else None
    return LoadedModel(model, tokenizer, items, users, meta, path)
