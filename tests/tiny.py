"""The tiny TTDS configurations the tests share (one definition each, imported by the test modules
and tests/conftest.py's session fixtures)."""

from __future__ import annotations

# a model that learns the synthetic corpus's planted transitions in a few epochs (beats popularity)
TINY = [
    "--index.levels=3", "--index.user_levels=2", "--index.codebook_size=16", "--index.code_dim=16",
    "--index.hidden_dims=[32]", "--index.epochs=6", "--index.features.source=collaborative",
    "--backbone.hidden_size=64", "--backbone.num_layers=2", "--backbone.num_heads=2", "--backbone.num_kv_heads=1",
    "--backbone.intermediate_size=128", "--optim.batch_size=32", "--optim.lr=3e-3",
    "--eval.valid_users=150", "--eval.templates=1", "--eval.workers=1", "--eval.beam_width=10",
]

# one 32-wide layer, 2 tokenizer epochs, 50 validation users: for tests of plumbing and outputs
# (the benchmark harness, sweeps), not of what the model learns
TINY_TTDS = [
    "--index.levels=3", "--index.user_levels=2", "--index.codebook_size=16", "--index.code_dim=16",
    "--index.hidden_dims=[32]", "--index.epochs=2", "--index.features.source=collaborative",
    "--backbone.hidden_size=32", "--backbone.num_layers=1", "--backbone.num_heads=2", "--backbone.num_kv_heads=1",
    "--backbone.intermediate_size=64", "--optim.batch_size=32", "--optim.lr=3e-3",
    "--eval.valid_users=50", "--eval.templates=1", "--eval.workers=1", "--eval.beam_width=10",
]
