"""Where the time of a TTDS epoch goes (`jobs/train_ttds.py --profile`).

Why: an epoch of TTDS cost ~25x one of SASRec on 2 cores and nobody had measured where that
time went (issue 27). The worker times its own stages with wall clocks around them
(`time.perf_counter`, the clock torch's own `torch.utils.benchmark` uses) and counts the
tokens of every task; the driver prints the table. With `--profile` off the worker holds
`OFF`, whose sections are one shared `nullcontext`, so training pays nothing for it.

The forward splits inline (backbone, LM loss, item head, L_ID, towers: sections inside
`TTDSModel.forward`). A backward cannot be split by wall clocks (autograd runs the pieces
interleaved), so every `replay_every`-th profiled step is replayed on a private copy of the
model with plain torch (forward + backward + AdamW, no DeepSpeed), once whole and once
without each optional term: the differences are each term's forward+backward, and the whole
replay against the engine's step is DeepSpeed's overhead. Replays stay out of the epoch's
figures. A bounded profile (`--profile-steps N`) times N steps and scales the per-step
figures to the epoch's step count; the table says which rows are scaled.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch

PROFILE_FILE = "profile.json"  # in the run folder, written by rank 0, read by the driver

_NULL = nullcontext()


class StageTimer:
    """Accumulated wall seconds and calls per named stage, plus named counters."""

    enabled = True

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.counts: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1

    def count(self, name: str, n: float) -> None:
        self.counts[name] += n


class _Off:
    """The profiler of an unprofiled run: every section is the same do-nothing context."""

    enabled = False

    def section(self, name: str):
        return _NULL

    def add(self, name: str, seconds: float) -> None:
        pass

    def count(self, name: str, n: float) -> None:
        pass


OFF = _Off()


def count_tokens(timer: StageTimer | _Off, tasks: list[str], lengths: list[int], labels: list[list[int]], width: int) -> None:
    """Rows, real tokens, padded tokens and loss tokens of one batch, per task."""
    if not timer.enabled:
        return
    for task, n, lab in zip(tasks, lengths, labels):
        timer.count(f"rows/{task}", 1)
        timer.count(f"real/{task}", n)
        timer.count(f"padded/{task}", width)
        timer.count(f"target/{task}", sum(1 for x in lab if x != -100))


class Replayer:
    """Times the model's terms with plain torch on a private copy (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, lr: float):
        """`model`: a private copy (the worker saves and reloads its model: a deepcopy would keep
        hooks that close over the live modules, and DeepSpeed's gradient hooks with them)."""
        self.model = model
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr)

    def _run(self, args: tuple, kw: dict, step: bool) -> tuple[float, float, float]:
        self.opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = self.model(*args, **kw)
        t1 = time.perf_counter()
        out["loss"].backward()
        t2 = time.perf_counter()
        if step:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], 1.0)
            self.opt.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def replay(self, timer: StageTimer, args: tuple, kw: dict) -> None:
        self.model.train()
        fwd, bwd, opt = self._run(args, kw, step=True)
        timer.add("replay/full_fwd", fwd)
        timer.add("replay/full_bwd", bwd)
        timer.add("replay/torch_adamw_step", opt)
        if kw.get("item_weight", 0) > 0:
            f, b, _ = self._run(args, {**kw, "item_weight": 0.0}, step=False)
            timer.add("replay/no_item_head", f + b)
        if kw.get("alpha", 0) > 0:
            f, b, _ = self._run(args, {**kw, "alpha": 0.0}, step=False)
            timer.add("replay/no_dmvae", f + b)
            if kw.get("beta", 0) > 0:
                f, b, _ = self._run(args, {**kw, "beta": 0.0}, step=False)
                timer.add("replay/no_towers", f + b)
        self.opt.zero_grad(set_to_none=True)


def save_profile(path: Path, timer: StageTimer, facts: dict[str, Any]) -> None:
    """rank 0's figures of the profiled epochs, with what the table needs to scale them."""
    data = {"seconds": dict(timer.seconds), "calls": dict(timer.calls), "counts": dict(timer.counts), **facts}
    path.write_text(json.dumps(data, indent=1, default=float))


def _row(name: str, s: float, epoch_s: float, note: str = "") -> str:
    share = f"{100 * s / epoch_s:5.1f}%" if epoch_s > 0 else "   - "
    return f"| {name} | {s:9.1f} | {share} | {note} |"


def profile_table(p: dict, label: str = "") -> str:
    """The table of `profile.json`: seconds per epoch by stage, then tokens per row by task."""
    sec, calls, cnt = p["seconds"], p["calls"], p["counts"]
    steps = max(calls.get("step", 0), 1)  # steps timed, over every profiled epoch
    epochs = max(p["epochs_profiled"], 1)
    scale = p["epoch_steps"] / steps  # seconds over the timed steps -> seconds per epoch
    per_step = {k: v * scale for k, v in sec.items()}
    s = lambda k: per_step.get(k, 0.0)  # noqa: E731
    # inline forward sections
    bb_fwd, lm_loss, head_fwd, id_fwd, tower_fwd = s("fwd/backbone"), s("fwd/lm_loss"), s("fwd/item_head"), s("fwd/dmvae_id"), s("fwd/towers")
    fwd_total, bwd_total, ds_step = s("forward"), s("backward"), s("optimizer_step")
    # replay deltas: each term's forward+backward, scaled to the engine's backward by replay ratio
    n_rep = max(calls.get("replay/full_fwd", 0), 1)
    rep = {k[len("replay/"):]: v / n_rep for k, v in sec.items() if k.startswith("replay/")}
    full = rep.get("full_fwd", 0.0) + rep.get("full_bwd", 0.0)
    per_epoch_steps = p["epoch_steps"]
    term = {}
    for name, key in (("item head (fwd+bwd, replay delta)", "no_item_head"), ("DM-VAE L_ID + towers (fwd+bwd, replay delta)", "no_dmvae"),
                      ("  of which towers L_token (fwd+bwd, replay delta)", "no_towers")):
        if key in rep:
            term[name] = max(full - rep[key], 0.0) * per_epoch_steps
    once = lambda k: sec.get(k, 0.0) / epochs  # noqa: E731  (once-per-epoch stages, not scaled)
    reindex = sec.get("reindex", 0.0) / max(calls.get("reindex", 0), 1)
    valid, save_best, ckpt = once("validate"), once("save_best"), once("checkpoint")
    gap = sec.get("between_epochs", 0.0) / max(calls.get("between_epochs", 0), 1)  # checkpoint copy + report, measured between epochs
    # the first step of an epoch (Ray Data's start-up, first-call allocations) is timed apart, never scaled
    first = (sec.get("first_step", 0.0)) / epochs
    first_wait = sec.get("data/first_batch", 0.0) / epochs
    steady = max(steps - epochs, 1)  # steps in step_total
    train_loop = sec.get("step_total", 0.0) * max(p["epoch_steps"] - 1, 0) / steady + first
    per_step["data/next_batch"] = sec.get("data/next_batch", 0.0) * max(p["epoch_steps"] - 1, 0) / steady
    epoch_est = train_loop + reindex + valid + gap
    lines = [
        f"TTDS epoch profile: {p['corpus']}{f' ({label})' if label else ''}, {p['epoch_steps']} steps/epoch of batch {p['batch_size']} on {p['world']} worker(s), "
        f"{p['threads']} torch thread(s); per-step rows timed over {steps} steps of {epochs} epoch(s), scaled to {p['epoch_steps']} steps"
        + (" (bounded: --profile-steps)" if scale * epochs > 1.01 else ""),
        "",
        "| stage | s/epoch | share | how |",
        "|---|---:|---:|---|",
        _row("Ray Data: first batch of the epoch (stream start-up)", first_wait, epoch_est, "once per epoch"),
        _row("Ray Data: waiting for the next batch", s("data/next_batch"), epoch_est, "per step, scaled"),
        _row("prompt building (rows -> token ids)", s("data/prompts"), epoch_est, "per step, scaled"),
        _row("padding + model inputs (pad, item-head positions, L_ID batch)", s("data/collate"), epoch_est, "per step, scaled"),
        _row("forward (engine, whole)", fwd_total, epoch_est, "per step, scaled"),
        _row("  backbone body forward (main batch)", bb_fwd, epoch_est, "inline section"),
        _row("  LM head + loss at labelled positions", lm_loss, epoch_est, "inline section"),
        _row("  item head softmax forward", head_fwd, epoch_est, "inline section"),
        _row("  DM-VAE L_ID forward (backbone on ID sequences)", id_fwd, epoch_est, "inline section"),
        _row("  towers L_token forward", tower_fwd, epoch_est, "inline section"),
        _row("backward (engine.backward, incl. DeepSpeed grad hooks)", bwd_total, epoch_est, "per step, scaled"),
        *[_row(k, v, epoch_est, f"plain-torch replay of {n_rep} steps") for k, v in term.items()],
        _row("DeepSpeed step (engine.step: clip, ZeRO, AdamW)", ds_step, epoch_est, "per step, scaled"),
        _row("  plain torch clip + AdamW on the same params", rep.get("torch_adamw_step", 0.0) * per_epoch_steps, epoch_est, "replay"),
        _row("  DeepSpeed fwd+bwd+step minus plain torch's", (fwd_total + bwd_total + ds_step) - (full + rep.get("torch_adamw_step", 0.0)) * per_epoch_steps,
             epoch_est, "engine vs replay"),
        _row("weight average update + loss sums", s("ema_and_sums"), epoch_est, "per step, scaled"),
        _row("train loop total (steps)", train_loop, epoch_est, "first step + the others scaled"),
        _row("re-index (towers encode, ID tables, prompts, trie)", reindex, epoch_est, f"mean of {calls.get('reindex', 0)} re-index(es)"),
        *[_row(f"  {label}", sec.get(k, 0.0) / max(calls.get("reindex", 0), 1), epoch_est, "")
          for k, label in (("reindex/text_x", "re-encode text X"), ("reindex/assign", "towers encode + ID tables"),
                           ("reindex/prompts", "prompt builder (token tables)"), ("reindex/trie", "trie")) if k in sec],
        _row("validation", valid, epoch_est, f"{p.get('valid_users', '?')} users, {p.get('rank_by', '?')}"),
        _row("  of which saving the best model", save_best, epoch_est, "in the loop's validation block"),
        _row("checkpoint save (model files)", ckpt, epoch_est, "rank 0"),
        _row("checkpoint copy + report + loop (between epochs)", gap, epoch_est, f"{calls.get('between_epochs', 0)} gap(s) timed"),
        _row("epoch (estimate: sum of the above)", epoch_est, epoch_est, ""),
    ]
    tasks = sorted({k.split("/", 1)[1] for k in cnt if k.startswith("rows/")})
    if tasks:
        lines += ["", "| task | rows/epoch | real tokens/row | padded tokens/row | padding share | loss tokens/row | share of padded tokens |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        all_pad = sum(cnt.get(f"padded/{t}", 0) for t in tasks) or 1
        for t in tasks:
            rows = cnt[f"rows/{t}"]
            real, pad, tgt = cnt.get(f"real/{t}", 0) / rows, cnt.get(f"padded/{t}", 0) / rows, cnt.get(f"target/{t}", 0) / rows
            lines.append(f"| {t} | {rows * scale:.0f} | {real:.1f} | {pad:.1f} | {100 * (1 - real / pad):.0f}% | {tgt:.1f} | "
                         f"{100 * cnt.get(f'padded/{t}', 0) / all_pad:.0f}% |")
        tot_rows = sum(cnt[f"rows/{t}"] for t in tasks)
        tot_real = sum(cnt.get(f"real/{t}", 0) for t in tasks)
        lines.append(f"| all | {tot_rows * scale:.0f} | {tot_real / tot_rows:.1f} | {all_pad / tot_rows:.1f} | {100 * (1 - tot_real / all_pad):.0f}% | | 100% |")
    lines.append("\nreplay rows are differences between separately timed plain-torch passes: on a loaded machine they are noise "
                 "(a negative engine-vs-replay row says so); the inline sections and the per-step rows are direct timings")
    if tasks:
        if "prompt_words" in cnt:
            lines.append(f"\ninstruction words (template text, BOS excluded) per row: {cnt['prompt_words'] / tot_rows:.1f} tokens")
    return "\n".join(lines)


def read_profile_table(run_dir: Path, label: str = "") -> str:
    """The table of a profiled run folder."""
    path = Path(run_dir) / PROFILE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {PROFILE_FILE} in {run_dir}: the profiled run wrote none")
    return profile_table(json.loads(path.read_text()), label)
