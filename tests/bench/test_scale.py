"""The scaling benchmark at tiny sizes: children measured, results resumable, doc rendered."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttds.bench.scale import ScaleConfig, growth_exponent, render, run


def test_growth_exponent_recovers_a_power_law():
    xs = np.array([1e4, 1e5, 1e6])
    assert growth_exponent(xs, 3 * xs**0.5) == pytest.approx(0.5)
    assert growth_exponent(xs[:1], xs[:1]) is None


def test_config_refuses_unknown_measures_and_tiny_sizes():
    with pytest.raises(ValueError, match="unknown measures"):
        ScaleConfig(measures=("nope",))
    with pytest.raises(ValueError, match="sizes"):
        ScaleConfig(sizes=(10,))


@pytest.mark.slow
def test_run_measures_in_children_resumes_and_renders(tmp_path):
    cfg = ScaleConfig(sizes=(1000, 2000), measures=("trie",), out=str(tmp_path / "runs"), doc=str(tmp_path / "docs" / "scaling.md"),
                      timeout_s=300)
    first = run(cfg)
    for n in ("1000", "2000"):
        got = first["sizes"][n]["trie"]
        assert "error" not in got, got
        assert got["peak_rss_mb"] > 10 and got["build_s"] > 0 and got["nodes"] > int(n)
    # a second run finds every figure and measures nothing again
    again = run(cfg)
    assert again["sizes"] == first["sizes"]
    text = (tmp_path / "docs" / "scaling.md").read_text()
    assert "| trie memory | MB |" in text and "growth exponent" in text
    assert (tmp_path / "docs" / "scaling_memory.png").stat().st_size > 1000
    # hand-written text outside the generated block survives a re-render
    (tmp_path / "docs" / "scaling.md").write_text("# mine\n\nkept\n\n" + text)
    render(json.loads((tmp_path / "runs" / "results.json").read_text()), tmp_path / "docs" / "scaling.md")
    assert (tmp_path / "docs" / "scaling.md").read_text().count("kept") == 1
