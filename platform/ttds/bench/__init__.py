"""The benchmark harness: the paper's tables, measured by the platform itself on one split.

`run_benchmark(BenchConfig(...))` (jobs/benchmark.py) trains and tests a set of systems
(`ttds.bench.systems`) under one budget, then writes results.json/.md/.png (`ttds.bench.report`);
`ttds.bench.perf` holds the speed ratios and `ttds.bench.memory` the RSS sampler.
"""

from ttds.bench.harness import run_benchmark
from ttds.bench.systems import System, known_systems, resolve_systems
from ttds.config import BenchConfig

__all__ = ["BenchConfig", "System", "known_systems", "resolve_systems", "run_benchmark"]
