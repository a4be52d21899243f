"""ttds.checkpoint: tensors in safetensors, state in JSON, and never an unpickle.

The refusal tests plant a live pickle payload: unpickling it would create a marker file, so
"the marker does not exist" proves that nothing unpickled it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ttds import checkpoint as ckpt
from ttds.checkpoint import UNSAFE_SUFFIXES, UnsafeCheckpointError, check_safe, load_state, save_state


class Payload:
    """Unpickling this runs `open(marker, "w")`: the marker file appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.weight": torch.randn(4, 3, generator=g),
        "encoder.bias": torch.nn.Parameter(torch.randn(3, generator=g)),  # requires_grad: detached on save
        "codebook.0": torch.randn(8, 2, generator=g).to(torch.bfloat16),
        "half": torch.randn(5, generator=g).half(),
        "transposed": torch.randn(3, 6, generator=g).t(),  # not contiguous
        "ids": torch.arange(10, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "step": torch.tensor(17),
        "empty": torch.zeros(0, 3),
    }


STATE = {
    "step": 17,
    "epoch": 2,
    "lr": 3e-4,
    "done": False,
    "best": None,
    "metrics": {"ndcg@10": 0.125, "hr@10": [0.5, 0.25]},
    "config": {"index": {"levels": 4, "codebook_size": 256}, "name": "ttds-é"},
}


def test_round_trip_tensors_and_state(tmp_path):
    src = tensors()
    save_state(tmp_path, src, STATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]

    loaded, state = load_state(tmp_path)
    assert state == STATE
    assert loaded.keys() == src.keys()
    for k, v in src.items():
        assert loaded[k].dtype == v.dtype, k
        assert loaded[k].shape == v.shape, k
        assert torch.equal(loaded[k], v.detach()), k
        assert not loaded[k].requires_grad


def test_round_trip_under_another_name_beside_the_first(tmp_path):
    save_state(tmp_path, {"w": torch.ones(2)}, {"who": "model"})
    save_state(tmp_path, {"w": torch.zeros(3)}, {"who": "tokenizer"}, name="tokenizer")
    t_model, s_model = load_state(tmp_path)
    t_tok, s_tok = load_state(tmp_path, name="tokenizer")
    assert s_model == {"who": "model"} and torch.equal(t_model["w"], torch.ones(2))
    assert s_tok == {"who": "tokenizer"} and torch.equal(t_tok["w"], torch.zeros(3))


def test_save_creates_nested_folders_and_overwrites(tmp_path):
    d = tmp_path / "run" / "checkpoint_000003"
    save_state(d, {"w": torch.ones(2)}, {"step": 1})
    save_state(d, {"w": torch.full((2,), 2.0)}, {"step": 2})
    t, s = load_state(d)
    assert s == {"step": 2} and torch.equal(t["w"], torch.full((2,), 2.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_saved_from_cpu(tmp_path):
    save_state(tmp_path, {"w": torch.randn(3, 3, device="cuda", dtype=torch.bfloat16)}, {})
    t, _ = load_state(tmp_path)
    assert t["w"].device.type == "cpu" and t["w"].dtype == torch.bfloat16


def test_the_planted_payload_is_live(tmp_path):
    """Control: the payload really would run code if unpickled (else the tests below prove nothing)."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def _plant(folder: Path, filename: str, marker: Path, via: str) -> Path:
    path = folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if via == "torch.save":
        torch.save({"w": torch.ones(2), "evil": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    assert path.stat().st_size > 0
    return path


@pytest.mark.parametrize("suffix", UNSAFE_SUFFIXES)
@pytest.mark.parametrize("via", ["torch.save", "pickle.dumps"])
def test_pickle_payload_is_refused_and_never_unpickled(tmp_path, monkeypatch, suffix, via):
    folder = tmp_path / "ckpt"
    marker = tmp_path / "marker"
    save_state(folder, {"w": torch.ones(2)}, {"step": 1})  # a valid checkpoint ...
    _plant(folder, f"model{suffix}", marker, via)  # ... with a pickle beside it

    def no_read(*a, **k):
        raise AssertionError("load_state read a file before refusing the folder")

    monkeypatch.setattr(ckpt, "load_file", no_read)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_state(folder)
    msg = str(err.value)
    assert f"model{suffix}" in msg, msg
    assert str(folder) in msg
    assert "pickle" in msg and "safetensors" in msg
    assert not marker.exists(), "the pickle payload ran"


def test_pickle_in_a_subfolder_is_refused(tmp_path):
    folder = tmp_path / "ckpt"
    marker = tmp_path / "marker"
    save_state(folder, {"w": torch.ones(2)}, {})
    _plant(folder, "optimizer/state.pt", marker, "torch.save")
    with pytest.raises(UnsafeCheckpointError, match=r"state\.pt"):
        load_state(folder)
    with pytest.raises(UnsafeCheckpointError):
        check_safe(folder)
    assert not marker.exists()


def test_unsafe_checkpoint_error_is_a_value_error():
    assert issubclass(UnsafeCheckpointError, ValueError)


def test_a_clean_folder_passes_check_safe(tmp_path):
    save_state(tmp_path, {"w": torch.ones(2)}, {})
    (tmp_path / "README.txt").write_text("notes")
    check_safe(tmp_path)  # no raise


def test_pickle_disguised_as_safetensors_is_not_unpickled(tmp_path):
    """A payload under the expected name fails as a bad safetensors file; it is never unpickled."""
    marker = tmp_path / "marker"
    save_state(tmp_path / "ckpt", {"w": torch.ones(2)}, {})
    _plant(tmp_path / "ckpt", "model.safetensors", marker, "pickle.dumps")
    with pytest.raises(Exception) as err:
        load_state(tmp_path / "ckpt")
    assert not isinstance(err.value, UnsafeCheckpointError)
    assert not marker.exists()


def test_wrongly_named_safetensors_is_reported(tmp_path):
    save_state(tmp_path, {"w": torch.ones(2)}, {"step": 1})
    (tmp_path / "model.safetensors").rename(tmp_path / "weights.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        load_state(tmp_path)
    msg = str(err.value)
    assert "model.safetensors" in msg and str(tmp_path) in msg, msg
    # the file under its real name loads once the caller says so
    (tmp_path / "model.json").rename(tmp_path / "weights.json")
    t, s = load_state(tmp_path, name="weights")
    assert torch.equal(t["w"], torch.ones(2)) and s == {"step": 1}


def test_missing_json_state_is_reported(tmp_path):
    save_state(tmp_path, {"w": torch.ones(2)}, {})
    (tmp_path / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        load_state(tmp_path)


# --- known gaps, kept visible: each turns into a failure (XPASS, strict) once fixed -------------


def test_tied_weights_can_be_saved(tmp_path):
    w = torch.randn(4, 3)
    save_state(tmp_path, {"embed_tokens.weight": w, "lm_head.weight": w}, {})
    t, _ = load_state(tmp_path)
    assert torch.equal(t["embed_tokens.weight"], t["lm_head.weight"])


def test_upper_case_pickle_suffix_is_refused(tmp_path):
    marker = tmp_path / "marker"
    save_state(tmp_path / "ckpt", {"w": torch.ones(2)}, {})
    _plant(tmp_path / "ckpt", "MODEL.PT", marker, "torch.save")
    try:
        with pytest.raises(UnsafeCheckpointError):
            load_state(tmp_path / "ckpt")
    except pytest.fail.Exception as e:
        raise AssertionError(str(e)) from None
    finally:
        if marker.exists():  # not an AssertionError: the xfail must not hide a payload that ran
            raise RuntimeError("the pickle payload ran")
