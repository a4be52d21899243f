"""What the serving tests share: the tiny model folders, the session's Ray, one Serve instance.

Why shared: each serving module used to build its own copies of the same tiny model folders
and start (then shut down) its own Serve controller and HTTP proxy; on the 2-core machine those
cost more than most of the tests that use them. A model folder here is built once per session
and is read-only (a test that changes one copies it first); Serve is started once, each module
deploys its app over the previous one (a declarative deploy replaces the whole app list), and
Serve is shut down as the run leaves tests/serve, so no idle controller or replica stays behind
for the training tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_SERVE: dict[str, str] = {}  # "url" while this session's Serve instance is up


@pytest.fixture(scope="session")
def tiny_model(synthetic_corpus, tmp_path_factory):
    """`tiny_model(seed, text_features)`: test_serve_app.build_tiny_model's folder, built once."""
    from test_serve_app import build_tiny_model

    built: dict[tuple[int, bool], Path] = {}

    def get(seed: int, text_features: bool) -> Path:
        if (seed, text_features) not in built:
            out = tmp_path_factory.mktemp("tiny_model") / f"seed{seed}-{'text' if text_features else 'collaborative'}"
            built[seed, text_features] = build_tiny_model(synthetic_corpus, out, seed=seed, text_features=text_features)
        return built[seed, text_features]

    return get


@pytest.fixture(scope="session")
def ray_for_serve(ray_session):
    """The session's loopback Ray (tests/conftest.py): Serve runs on it."""
    return ray_session


@pytest.fixture(scope="module")
def serve_url(ray_for_serve) -> str:
    """The base URL of this session's Serve HTTP proxy on a free loopback port (started on first use)."""
    if "url" not in _SERVE:
        from ray import serve

        from test_serve_app import free_port

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        _SERVE["url"] = f"http://127.0.0.1:{port}"
    return _SERVE["url"]


def pytest_runtest_teardown(item, nextitem):
    """Leaving tests/serve (or the run ending): shut this session's Serve down."""
    if "url" in _SERVE and (nextitem is None or HERE not in Path(nextitem.path).parents):
        from ray import serve

        serve.shutdown()
        _SERVE.clear()
