"""Shared fixtures: one loopback Ray per test session, generated corpora, real-data paths."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ttds.runtime import set_loopback_env

set_loopback_env()

SHARED_DATA = Path(os.environ.get("TTDS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """The real corpus folder, or a skip that says why (CI clones carry ../shared)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is not present (set TTDS_SHARED_DATA to the folder holding {name}/)")
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread in the test process: faster than two on a busy 2-core machine
    (measured), and the same numbers; Ray workers get their own thread counts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_session():
    """A single local Ray on 127.0.0.1 shared by all tests (ray.init costs 3-5 s)."""
    import ray

    from ttds.runtime import init_ray

    # test modules hold small worker functions; workers import them by module name
    tests_dirs = [str(p) for p in Path(__file__).parent.rglob("*") if p.is_dir() and "__pycache__" not in str(p)]
    pythonpath = os.pathsep.join([str(Path(__file__).parent), *tests_dirs])
    for attempt in range(3):  # on a saturated 2-core machine a raylet sometimes fails its 30 s start-up check
        try:
            init_ray(num_cpus=2, object_store_mb=400, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
            break
        except Exception:  # noqa: BLE001 - start-up timeouts under load; retried
            ray.shutdown()
            if attempt == 2:
                raise
            time.sleep(5)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A small prepared synthetic corpus (planted cluster transitions)."""
    from ttds.data.prepare import prepare_corpus
    from ttds.data.synthetic import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("synthetic")
    raw, _ = generate(SyntheticConfig(n_items=120, n_users=300, n_clusters=10, seed=0))
    prepare_corpus(raw, out)
    return out
