"""The prepare job end to end: real Instruments statistics, and bad input through the CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from conftest import shared_dataset

ROOT = Path(__file__).resolve().parents[2]


def run_prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / "prepare_data.py"), *args], capture_output=True, text=True, timeout=300)


def test_instruments_statistics_reproduced_exactly(tmp_path):
    path = shared_dataset("Instruments")
    r = run_prepare("--source", "lcrec", "--path", str(path), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["counts"]["users"] == 24772
    assert m["counts"]["items"] == 9922
    assert m["counts"]["interactions"] == 206153
    assert m["counts"]["train_interactions"] == 156609
    assert m["counts"]["valid"] == m["counts"]["test"] == 24772
    assert m["has_precomputed_index"] and m["rejects"]["dropped"] == 0
    assert all(len(h) == 64 for h in m["inputs"].values())


def test_bad_amazon_file_reports_and_keeps_good_records(tmp_path):
    reviews = tmp_path / "Toys.json.gz"
    good = [{"reviewerID": f"U{u}", "asin": f"A{i}", "unixReviewTime": 1000 + 10 * i, "overall": 5.0, "summary": "ok", "reviewText": "fine"}
            for u in range(3) for i in range(4)]
    lines = [json.dumps(g) for g in good] + ["{not json", json.dumps({"asin": "A1", "unixReviewTime": 5})]
    with gzip.open(reviews, "wt") as f:
        f.write("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = run_prepare("--source", "amazon", "--path", str(reviews), "--out", str(out), "--kcore", "0")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["interactions"] == 12
    assert m["rejects"]["by_kind"] == {"malformed_json": 1, "missing_field": 1}
    rej = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert {(x["kind"], x["line"]) for x in rej} == {("malformed_json", 13), ("missing_field", 14)}


def test_unusable_input_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "X.inter.json"
    bad.write_text("this is not json")
    r = run_prepare("--source", "lcrec", "--path", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr
