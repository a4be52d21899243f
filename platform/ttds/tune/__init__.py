"""Ray Tune sweeps over the TTDS config (ID length, codebook size, loss weights, ...).

`space` reads the sweep YAML (settings, fixed values, search space); `sweep` runs trials that
are whole `train_ttds` runs, stops weak ones early with ASHA, and writes the trial table,
the best config and a plot. The CLI is jobs/tune_ttds.py.
"""

from ttds.tune.space import ParamSpec, SweepSpec, TuneSettings, count_trials, load_sweep
from ttds.tune.sweep import SweepOutcome, run_sweep

__all__ = ["ParamSpec", "SweepOutcome", "SweepSpec", "TuneSettings", "count_trials", "load_sweep", "run_sweep"]
