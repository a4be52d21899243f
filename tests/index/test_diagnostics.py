"""Index diagnostics: NMI with categories (numpy, equal to scikit-learn's) and code spectra."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttds.index.diagnostics import (
    category_labels,
    code_category_nmi,
    entropy,
    index_diagnostics,
    mutual_information,
    nmi,
    plot_spectrum,
    singular_spectrum,
    spectrum_summary,
)
from ttds.index.rq import RQConfig, RQTokenizer
from ttds.index.table import SemanticIDTable


def test_nmi_matches_known_values():
    a = [0, 0, 0, 1, 1, 1]
    assert nmi(a, a) == pytest.approx(1.0)
    assert nmi(a, [5, 5, 5, 2, 2, 2]) == pytest.approx(1.0)  # label names do not matter
    # hand-computed (and scikit-learn's normalized_mutual_info_score): 2 ln2 / 3 / ((ln2 + ln3) / 2)
    assert nmi(a, [0, 0, 1, 1, 2, 2]) == pytest.approx(0.5158, abs=1e-4)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert nmi([1, 1, 1], [2, 2, 2]) == 1.0 and nmi([1, 1, 1], [1, 2, 3]) == 0.0
    assert entropy(["x", "y"]) == pytest.approx(np.log(2))
    rng = np.random.default_rng(0)
    assert nmi(rng.integers(0, 4, 20000), rng.integers(0, 4, 20000)) < 0.01
    assert mutual_information(np.array([[0, 1], [0, 1], [1, 1]]), ["p", "p", "q"]) == pytest.approx(entropy(["p", "p", "q"]))
    with pytest.raises(ValueError):
        mutual_information([0, 1], [0])


def test_category_labels_and_code_nmi():
    cats = ["Root,Tools,Saws", "Root,Tools", "Root,Lab,Glass", "", None, "Lab"]
    assert category_labels(cats, 1).tolist() == ["Tools", "Tools", "Lab", "", "", "Lab"]
    assert category_labels(cats, 0).tolist()[:3] == ["Root", "Root", "Root"]
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 8, 400)
    names = np.array([f"Root,C{c}" for c in labels], dtype=object)
    good = np.stack([labels, rng.integers(0, 16, 400)], 1)  # first code = category
    bad = rng.integers(0, 8, (400, 2))
    rg = code_category_nmi(good, category_labels(names))
    rb = code_category_nmi(bad, category_labels(names))
    assert rg["first_level"] == pytest.approx(1.0) and rg["level_nmi"][1] < 0.1
    assert rb["first_level"] < 0.1 and rg["full_code"] > rb["full_code"]
    assert rg["items_with_category"] == 400 and rg["categories"] == 8
    assert code_category_nmi(good, [""] * 400)["nmi"] is None  # no categories: nothing to report


def test_spectrum_shows_collapse_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.normal(size=(500, 16))
    low = rng.normal(size=(500, 2)) @ rng.normal(size=(2, 16))  # collapsed onto 2 directions
    s_full, s_low = singular_spectrum(full), singular_spectrum(low)
    assert s_full.shape == (16,) and np.all(np.diff(s_full) <= 1e-9)
    sum_full, sum_low = spectrum_summary(s_full), spectrum_summary(s_low)
    assert sum_low["energy_top1"] > sum_full["energy_top1"]
    assert sum_low["effective_rank"] < 3 < sum_full["effective_rank"]
    png = plot_spectrum({"full": s_full, "collapsed": s_low}, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_index_diagnostics_writes_json_and_png(tmp_path):
    tower = RQTokenizer(RQConfig(input_dim=8, code_dim=4, hidden_dims=(8,), levels=2, codebook_size=8))
    x = torch.randn(120, 8, generator=torch.Generator().manual_seed(0))
    tower.quantizer.init_codebooks(tower.latents(x))
    codes = tower.encode(x).numpy()
    items = SemanticIDTable.from_codes("item", np.arange(120), codes, 8)
    users = SemanticIDTable.from_codes("user", np.arange(50), np.random.default_rng(0).integers(0, 8, (50, 2)), 8)
    cats = [f"Root,C{c}" for c in codes[:, 0]]
    d = index_diagnostics(tmp_path, items, users, cats, item_tower=tower)
    assert d["item_category_nmi"]["first_level"] == pytest.approx(1.0)
    assert 0 < d["item_category_nmi"]["final_id"] <= 1
    assert d["item_spectrum"]["basis"] == "code_vectors" and d["item_spectrum"]["dims"] == 8  # M * code_dim
    assert d["user_spectrum"]["basis"] == "one_hot"  # a static table has no code vectors
    assert (tmp_path / "code_spectrum.png").exists()
    assert json.loads((tmp_path / "diagnostics.json").read_text())["item_spectrum"]["effective_rank"] > 1
