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


# Seconds each of the longest test files took in a full run on the 2-core dev machine. Only the
# order matters: pytest-xdist hands out work units in collection order, so the longest go first
# and the short ones fill the gaps at the end. A file not listed counts as short.
LONGEST_FIRST = {
    "tests/bench/test_confirm.py": 250, "tests/train/test_train_ttds_e2e.py": 175, "tests/bench/test_benchmark_harness.py": 180,
    "tests/serve/test_serve_app.py": 170, "tests/cluster/test_node_loss.py": 90, "tests/tune/test_tune_sweep.py": 110,
    "tests/train/test_worker_kill_resume.py": 105, "tests/baselines/test_baselines.py": 105, "tests/jobs/test_ray_job_submit.py": 80,
    "tests/train/test_tokenizer_job.py": 75, "tests/index/test_index_kind.py": 35, "tests/serve/test_direct_ingress.py": 65,
    "tests/train/test_item_head.py": 55,
}
# Files whose tests share the session's Serve instance (tests/serve/conftest.py `serve_url`): one unit.
SHARED_SERVE = ("tests/serve/test_serve_app.py", "tests/serve/test_replica_kill.py", "tests/serve/test_catalogue_update.py")
# Files whose tests are independent and long (each starts its own cluster or job): one unit per test.
ONE_UNIT_PER_TEST = ("tests/cluster/test_node_loss.py", "tests/index/test_index_kind.py")


def work_unit(nodeid: str) -> str:
    """The pytest-xdist work unit of a test (`-n 2`): the tests of a unit run in one worker, in order.

    A test file is one unit, so its module fixtures are built once (an expensive session fixture,
    like the Tune sweep `ttds_tuned`, belongs to one file for the same reason); the files sharing
    the session's Serve instance are one unit; ONE_UNIT_PER_TEST files split."""
    path = nodeid.split("::")[0]
    if path in SHARED_SERVE:
        return "tests/serve"
    return nodeid if path in ONE_UNIT_PER_TEST else path


def pytest_xdist_make_scheduler(config, log):
    """Schedule by `work_unit`. Why not `--dist loadgroup` with marks: on pytest 9.2 its node-id
    suffix no longer takes effect (pytest-dev/pytest-xdist#1386), so it silently degrades to `load`,
    which splits files and builds their module fixtures once per worker."""
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnits(config, log)


def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker: the units known to be long first (LONGEST_FIRST; the scheduler
    keeps collection order with `--no-loadscope-reorder`). Without xdist the order is unchanged."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    units = {item.nodeid: work_unit(item.nodeid) for item in items}
    cost: dict[str, int] = {}
    for item in items:  # a unit costs what its longest file does
        cost[units[item.nodeid]] = max(cost.get(units[item.nodeid], 0), LONGEST_FIRST.get(item.nodeid.split("::")[0], 0))
    items.sort(key=lambda it: -cost[units[it.nodeid]])  # stable: collection order within a unit


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


@pytest.fixture(scope="session")
def tiny_tokenizer(synthetic_corpus, tmp_path_factory):
    """`tiny_tokenizer(index)`: a tokenizer folder for the IndexConfig `index` on the synthetic
    corpus, in the layout jobs/train_tokenizer.py writes, built once per index config.

    Why: the tokenizer warm-up is its own Ray Train run (~40 s here); tests whose subject comes
    after it (the item head, worker-kill resume, the benchmark harness) pass this folder as
    `tokenizer_dir`. Its towers are k-means-initialised in-process (the first training forward),
    which already gives usable IDs. tests/train/test_train_ttds_e2e.py keeps the trained warm-up.
    The folder is read-only for the jobs that use it (they read tables and features, never write)."""
    import json

    import torch

    from ttds import checkpoint as ckpt_io
    from ttds.config import to_dict
    from ttds.data.corpus import Corpus
    from ttds.features.build import build_features
    from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
    from ttds.train.tokenizer_job import save_features, tables_from_model

    built: dict[str, Path] = {}

    def get(index) -> Path:
        key = json.dumps(to_dict(index), sort_keys=True, default=str)
        if key in built:
            return built[key]
        out = tmp_path_factory.mktemp("tokenizer")
        feats = build_features(Corpus.open(synthetic_corpus), index.features)
        save_features(feats, out / "features.safetensors")
        towers = index.towers(feats.item_x.shape[1], feats.user_x.shape[1])
        model = TwinTowerTokenizer(TwinTowerConfig.from_dict(towers))
        model.train()
        torch.manual_seed(0)
        model.item(torch.as_tensor(feats.item_x))  # the first training forward k-means-initialises the codebooks
        model.user(torch.as_tensor(feats.user_x))
        model.eval()
        items, users = tables_from_model(model, feats, index)
        items.save(out)
        users.save(out)
        ckpt_io.save_state(out, model.state_dict(), {"towers": towers, "epoch": 9}, "tokenizer")
        built[key] = out
        return out

    return get


@pytest.fixture(scope="session")
def ttds_tuned(ray_session, synthetic_corpus, tmp_path_factory):
    """One Ray Tune sweep of a TTDS-family system through the confirmatory protocol's
    `tune_and_freeze`, shared by tests/tune (the sweep: its table, a failed trial, best config and
    model) and tests/bench/test_confirm.py (the frozen recipe).

    Why one: both used to run their own sweep of the same tiny model (~60-90 s each). The space is
    configs/tune_default.yaml's with index.codebook_size as a grid of [16, 0]: the second value is
    rejected by the RQ tokenizer, so one trial trains (2 epochs) and one fails, and the sweep must
    still finish and freeze the good one."""
    from types import SimpleNamespace

    from ttds.bench.confirm import ttds_space, tune_and_freeze
    from ttds.bench.harness import Harness
    from ttds.config import BenchConfig, TTDSJobConfig, load_config, save_config

    from tiny import TINY_TTDS

    tmp = tmp_path_factory.mktemp("ttds_tuned")
    base = tmp / "tiny.yaml"
    save_config(load_config(TTDSJobConfig, None, TINY_TTDS), base)
    h = Harness(BenchConfig(data=str(synthetic_corpus), systems=["tiger"], out=str(tmp / "out"), budget_epochs=2, tune_trials=1,
                            ttds_config=str(base)))
    space = {**ttds_space(), "index.codebook_size": {"type": "grid", "values": [16, 0]}}
    frozen, info = tune_and_freeze(h, h.systems[0], space=space)
    return SimpleNamespace(harness=h, system=h.systems[0], frozen=frozen, info=info, sweep_dir=Path(h.out) / "tune" / "tiger")
