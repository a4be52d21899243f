"""Checkpoints that are safe to load: tensors in safetensors, everything else in JSON.

A bottom-layer module (it imports nothing from ttds): the trainers save and resume with it,
and `llm.model_io` refuses pickles in a model folder with `check_safe` before loading one.

Nothing here unpickles: a checkpoint folder from an untrusted source can at worst hold
wrong numbers, never code. A folder holding a pickle payload is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNSAFE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class UnsafeCheckpointError(ValueError):
    """A checkpoint folder holds a file format that would run code when loaded."""


def save_state(directory: str | Path, tensors: dict[str, torch.Tensor], state: dict, name: str = "model") -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (tied embeddings): give each its own copy
    seen: set[int] = set()
    flat = {}
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        flat[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    save_file(flat, str(d / f"{name}.safetensors"))
    (d / f"{name}.json").write_text(json.dumps(state, indent=2, default=str))


def check_safe(directory: str | Path) -> None:
    bad = [p.name for p in Path(directory).rglob("*") if p.suffix.lower() in UNSAFE_SUFFIXES]
    if bad:
        raise UnsafeCheckpointError(
            f"checkpoint {directory} holds pickle-based files {bad}; ttds loads safetensors and JSON only "
            "(a pickle can run arbitrary code). Re-save the weights with safetensors."
        )


def load_state(directory: str | Path, name: str = "model") -> tuple[dict[str, torch.Tensor], dict]:
    d = Path(directory)
    check_safe(d)
    tensors = load_file(str(d / f"{name}.safetensors"))
    state = json.loads((d / f"{name}.json").read_text())
    return tensors, state
