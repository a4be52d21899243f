"""The benchmark harness: train and test a set of systems on one corpus under one budget each.

Each system is a recipe (`configs/recipes/<name>.yaml`, `ttds.config.recipes`) and runs through
the platform's own job functions, in this process (no re-implemented training loops):
`ttds.baselines.train_and_evaluate` for popularity/SASRec/GRU4Rec (with the recipe's model config),
and `ttds.train.ttds_job.train_ttds` with the recipe's config for the TTDS family (TIGER-style =
the `tiger` recipe). Both select the best epoch on validation NDCG@10 (early stopping with
their own patience) and score the test split with full ranking; retrieval systems re-rank the
same test users with the fast path (`ttds.bench.retrieval_eval`).

Layout of `out`:
  results.json / results.md / results.png / details.json   (ttds.bench.report)
  run.json                     the harness config, argv-equivalent and the machine
  systems/<name>/              one job output folder per system (+ result.json, key.json)
  perf/                        the short runs of --perf

A re-run with the same `out` reuses each system whose resolved config is unchanged
(systems/<name>/result.json) and resumes an interrupted one from its checkpoints; a system
whose config changed is moved aside to `<name>.stale-<time>` and trained again. A config field
added to the platform since a run does not change it when set to what the run did before the
field existed (`ttds.bench.run_keys`), so upgrading ttds does not retrain earlier folders.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from ttds import console
from ttds.baselines import train_and_evaluate
from ttds.baselines.content_knn import ContentKNNConfig, run_content_knn, text_item_vectors
from ttds.baselines.runner import load_trained, score_seq_test
from ttds.bench import perf
from ttds.bench.cold import cold_figures, cold_summary, cold_table
from ttds.bench.confirm import TEST_READS, run_confirm
from ttds.bench.diagnostics import ranking_diagnostics
from ttds.bench.memory import RssSampler
from ttds.bench.paired import paired_comparison
from ttds.bench.report import METRICS, is_baseline, write_results
from ttds.bench.retrieval_eval import evaluate_retrieval
from ttds.bench.run_keys import BEFORE_ADDED, KEY_FILE, NO_EFFECT, config_key, differs_only_by_added, keyed_of_folder, plain, write_key_file
from ttds.bench.systems import System, resolve_systems, retrieval_bases
from ttds.config import SEQ_MODELS, BenchConfig, TrainConfig, TTDSJobConfig, from_dict, load_config, to_dict
from ttds.data.cold_items import make_cold_split
from ttds.data.resolve import open_or_prepare
from ttds.eval.per_user import PER_USER_FILE, read_per_user
from ttds.runtime import init_ray
from ttds.train.ttds_job import score_ttds_test, train_ttds

log = logging.getLogger(__name__)

__all__ = ["BenchConfig", "run_benchmark"]

# index fields that only matter during joint training, not to the warm-up tokenizer
_COLD_ONLY = ("new_item_share",)  # eval fields read only by the cold-item figures (cached with their value, ttds.bench.cold)
# train fields added since version 1 that change nothing for popularity/SASRec/GRU4Rec (DDP or no training,
# never DeepSpeed): an earlier baseline folder is reused whatever its value (ttds.bench.run_keys.NO_EFFECT)
_BASELINE_BEFORE = {**BEFORE_ADDED, "train.deepspeed_when_alone": NO_EFFECT}
_JOINT_ONLY = ("dynamic", "reindex_every", "reindex_rule", "max_suffix_tokens", "reencode_text", "joint_lr_scale")


# ----------------------------------------------------------------------------- overrides
def parse_sets(sets: list[str], systems: list[System]) -> dict[str, list[tuple[str, str]]]:
    """SYSTEM:key=value strings -> {system name: [(key, value), ...]} in the order given."""
    out: dict[str, list[tuple[str, str]]] = {s.name: [] for s in systems}
    for item in sets:
        if ":" not in item or "=" not in item.split(":", 1)[1]:
            raise ValueError(f"--set {item!r} must look like SYSTEM:key=value (e.g. ttds:optim.lr=5e-4, sasrec:hidden=128)")
        pattern, kv = item.split(":", 1)
        key, value = kv.split("=", 1)
        key = key[2:] if key.startswith("--") else key
        if pattern == "ttds-family":
            hits = [s for s in systems if s.kind == "ttds"]
        elif pattern == "baselines":
            hits = [s for s in systems if s.kind == "seq"]
        else:
            hits = [s for s in systems if fnmatch.fnmatchcase(s.name, pattern)]
        if not hits:
            raise ValueError(f"--set {item!r}: no system in this run matches {pattern!r}")
        bad = [s.name for s in hits if s.kind not in ("ttds", "seq")]
        if bad:
            raise ValueError(f"--set {item!r}: {bad} take no config (popularity has none; a retrieval system uses its base's)")
        for s in hits:
            out[s.name].append((key, value))
    return out


def _entry(metrics: dict, wall_s: float, peak_rss_mb: float, config: dict) -> dict:
    """One system's results.json record (exactly the issue's keys)."""
    return {**{k: float(metrics[k]) for k in METRICS}, "wall_s": round(float(wall_s), 1), "peak_rss_mb": round(float(peak_rss_mb), 1), "config": config}


# ----------------------------------------------------------------------------- the harness
def ttds_keyed(tcfg: TTDSJobConfig) -> dict:
    """What identifies a TTDS system's run (`ttds.bench.run_keys`): its config, less the tokenizer folder
    (shared or not, the same tokenizer) and the knobs that change no figure of the main run (it has no
    added items: `_COLD_ONLY`)."""
    keyed = {k: v for k, v in to_dict(tcfg).items() if k != "tokenizer_dir"}
    keyed["eval"] = {k: v for k, v in keyed["eval"].items() if k not in _COLD_ONLY}
    return keyed


class Harness:
    def __init__(self, cfg: BenchConfig, systems: list[System] | None = None, source: Path | None = None):
        """`systems`: already resolved systems (the confirmatory protocol hands each seed's run the
        frozen recipes); default: resolved from `cfg.systems`. `source`: a finished benchmark folder
        whose trained systems this run scores again under its own protocol instead of training
        them (`_rescore`; the confirmatory protocol's --also-all-items)."""
        self.cfg = cfg
        self.source = Path(source) if source is not None else None
        self.out = Path(cfg.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        with console.stage("data", unit="corpus"):
            init_ray()  # before sampling: a local Ray's processes are then this process's descendants
            self.corpus = open_or_prepare(cfg.data, cfg.seed)
        self.cold = None  # --cold-items: systems train and run their main test on the warm corpus (ttds.data.cold_items)
        self.cold_rows: dict[str, dict] = {}
        if cfg.cold_items:
            self.cold = make_cold_split(self.corpus, cfg.cold_items, cfg.seed, self.out / "cold_split")
            self.corpus = self.cold.train
        self.systems = list(systems) if systems is not None else resolve_systems(cfg.systems)
        self.sets = parse_sets(cfg.sets, self.systems)
        self.with_retrieval = retrieval_bases(self.systems)
        self.ttds_cfgs: dict[str, Any] = {}
        self.tokenizers: dict[str, Path] = {}  # tokenizer key -> folder (shared by same-index systems)
        self.records: dict[str, dict] = {}  # name -> {"entry", "detail", "key"}
        self.failures: dict[str, str] = {}  # name -> why it has no row
        self.rss = RssSampler(cfg.rss_interval_s)
        self.validate()

    def validate(self) -> None:
        """Resolve every system's config now: a typo fails in seconds, not hours in."""
        for s in self.systems:
            if s.kind == "ttds":
                self.ttds_config(s, self.out / "systems" / s.name)  # the config checks itself as it is built
            elif s.kind == "seq":
                from_dict(SEQ_MODELS[s.model], self.seq_overrides(s))

    # -- configs
    def budget_text(self) -> str:
        parts = []
        if self.cfg.budget_epochs:
            parts.append(f"at most {self.cfg.budget_epochs} epoch{'s' if self.cfg.budget_epochs > 1 else ''}")
        if self.cfg.budget_minutes:
            parts.append(f"{self.cfg.budget_minutes:g} min of training loop")
        return (", ".join(parts) or "each system's default epochs") + " (early stopping on validation NDCG@10 within it)"

    def train_config(self) -> TrainConfig:
        t = TrainConfig(cpus_per_worker=self.cfg.cpus_per_worker, use_gpu=self.cfg.use_gpu)
        return dataclasses.replace(t, num_workers=self.cfg.workers) if self.cfg.workers else t

    def ttds_config(self, s: System, sysdir: Path) -> TTDSJobConfig:
        """Defaults < --ttds-config YAML < the system's recipe < the harness's settings < --set."""
        ov = [f"--data.corpus={self.corpus.root}", f"--output_dir={sysdir}"]
        if s.index_kind:
            ov.append(f"--index.kind={s.index_kind}")
        if self.cfg.budget_epochs:
            ov.append(f"--optim.epochs={self.cfg.budget_epochs}")
        if self.cfg.budget_minutes:
            ov.append(f"--optim.time_budget_s={self.cfg.budget_minutes * 60:g}")
        if self.cfg.workers:
            ov.append(f"--train.num_workers={self.cfg.workers}")
        ov.append(f"--train.cpus_per_worker={self.cfg.cpus_per_worker}")
        if self.cfg.use_gpu:
            ov.append("--train.use_gpu=true")
        if s.name in self.with_retrieval:
            ov.append(f"--loss.retrieval_weight={self.cfg.retrieval_weight}")
        if self.cfg.exclude_seen:
            ov.append("--eval.exclude_seen=true")
        if self.cfg.train_seed is not None:
            ov.append(f"--optim.seed={self.cfg.train_seed}")
        ov += [f"--{k}={v}" for k, v in self.sets[s.name]]  # after the harness's: a --set wins
        return s.recipe.ttds_config(ov, self.cfg.ttds_config or None)

    def seq_overrides(self, s: System) -> dict:
        """The baseline's config keys: its recipe's, then the harness's budget and seed, then --set."""
        ov: dict[str, Any] = dict(s.recipe.config)
        if self.cfg.budget_epochs:
            ov["epochs"] = self.cfg.budget_epochs
        if self.cfg.budget_minutes:
            ov["time_budget_s"] = self.cfg.budget_minutes * 60
        if self.cfg.train_seed is not None:
            ov["seed"] = self.cfg.train_seed
        for k, v in self.sets[s.name]:
            ov[k] = yaml.safe_load(v)
        return ov

    def tokenizer_key(self, tcfg: TTDSJobConfig) -> str:
        index = {k: v for k, v in to_dict(tcfg.index).items() if k not in _JOINT_ONLY}
        return config_key({"index": index, "data": to_dict(tcfg.data), "backbone": tcfg.backbone.name})

    # -- bookkeeping
    def _prepare_dir(self, name: str, keyed: dict, before: dict | None = None) -> tuple[Path, dict | None]:
        """The system's folder; a reusable earlier record, or None. A folder holding another
        config's run is moved aside (resuming it would mix two configs). `keyed` is what
        identifies the run; an earlier run whose keyed config lacks only fields the platform
        gained since, each set here to what it did before them (`before`, default run_keys.BEFORE_ADDED),
        is the same run (run_keys)."""
        sysdir = self.out / "systems" / name
        key_file = sysdir / KEY_FILE
        if sysdir.exists() and key_file.exists():
            old = json.loads(key_file.read_text())["key"]
            same = old == config_key(keyed)
            if not same:
                earlier = keyed_of_folder(sysdir)
                same = earlier is not None and differs_only_by_added(earlier, plain(keyed), before)
                if same:
                    log.info("%s: the earlier run lacks only config fields added since, set here as it ran: reusing it", name)
            if same and not self.cfg.fresh:
                rec = sysdir / "result.json"
                return sysdir, (json.loads(rec.read_text()) if rec.exists() else None)
            stale = sysdir.with_name(f"{name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("%s: config changed (or --fresh): moving the earlier run to %s", name, stale)
            sysdir.rename(stale)
        elif sysdir.exists() and self.cfg.fresh:
            sysdir.rename(sysdir.with_name(f"{name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"))
        sysdir.mkdir(parents=True, exist_ok=True)
        write_key_file(sysdir, keyed)
        return sysdir, None

    def _reuse(self, name: str, sysdir: Path, record: dict) -> None:
        """A finished earlier run of `name` stands as this run's record: no training, no test read."""
        self.records[name] = record
        log.info("%s: reusing the result in %s", name, sysdir)
        console.say(f"{name}: reusing the result in {sysdir}")

    def _finish(self, name: str, sysdir: Path, key: str, entry: dict, detail: dict) -> None:
        """Record a system scored on test just now: result.json, and one line in test_reads.jsonl
        (every read of the test split, so a report can say each unit was scored once)."""
        rec = {"key": key, "entry": entry, "detail": detail}
        with open(self.out / TEST_READS, "a") as fh:
            fh.write(json.dumps({"system": name, "train_seed": self.cfg.train_seed, "key": key,
                                 "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        (sysdir / "result.json").write_text(json.dumps(rec, indent=2, default=float))
        self.records[name] = rec
        log.info("%s: test NDCG@10 %.4f HR@10 %.4f (%.0f s)", name, entry["NDCG@10"], entry["HR@10"], entry["wall_s"])
        console.say(f"{name}: test NDCG@10 {entry['NDCG@10']:.4f}  HR@10 {entry['HR@10']:.4f}  ({entry['wall_s']:.0f} s)")

    # -- systems
    def run_system(self, s: System) -> None:
        t0 = time.time()
        self.rss.sample()  # a system shorter than the sampling interval still gets a figure
        if self.source is not None and s.kind in ("seq", "ttds"):
            self._rescore(s, t0)
        elif s.kind in ("popularity", "seq", "content"):
            self._baseline(s, t0)
        elif s.kind == "ttds":
            self._ttds(s, t0)
        else:
            self._retrieval(s, t0)
        if self.cold is not None and s.name in self.records:
            self._cold(s)

    def _cold(self, s: System) -> None:
        detail = self.records[s.name]["detail"]
        try:
            self.cold_rows[s.name] = cold_figures(s.kind, Path(detail["out_dir"]), self.cold, self.cfg.exclude_seen, self.ttds_cfgs.get(s.name),
                                                  self.content_vectors() if s.kind == "content" else None, self.cfg.use_gpu)
        except Exception as e:  # noqa: BLE001 - the main row stands; say why the cold figures are missing
            log.exception("%s: cold-item figures failed", s.name)
            self.cold_rows[s.name] = {"error": f"{type(e).__name__}: {e}"[:500]}

    def content_config(self):
        """Content kNN uses the TTDS recipe's text encoder (its backbone, as the features job does)."""
        t = load_config(TTDSJobConfig, self.cfg.ttds_config or None, [])
        return ContentKNNConfig(text_backbone=t.backbone.name, text_max_length=t.index.features.text_max_length)

    def content_vectors(self):
        """Cold runs: text vectors of the full catalogue (vocabulary and centre from the warm items), once."""
        if self.cold is None:
            return None
        if getattr(self, "_content_vecs", None) is None:
            self._content_vecs = text_item_vectors(self.cold.full, self.content_config(), self.cold.n_warm, self.corpus.item_titles)
        return self._content_vecs

    def _memory(self, t0: float, t1: float | None = None) -> dict:
        self.rss.sample()
        return self.rss.window(t0, t1).to_dict()

    def _baseline(self, s: System, t0: float) -> None:
        ov = self.seq_overrides(s) if s.kind == "seq" else {}
        train = self.train_config()
        keyed = {"system": s.name, "corpus": str(self.corpus.root), "overrides": ov, "train": to_dict(train),
                 **({"exclude_seen": True} if self.cfg.exclude_seen else {})}  # absent when off: earlier runs stay reusable
        key = config_key(keyed)
        sysdir, done = self._prepare_dir(s.name, keyed, _BASELINE_BEFORE)
        if done:
            self._reuse(s.name, sysdir, done)
            return
        epochs = from_dict(SEQ_MODELS[s.model], ov).epochs if s.kind == "seq" else None
        with console.stage("train + test", total=epochs, unit="epoch" if epochs else ""):
            if s.kind == "content":
                res = run_content_knn(self.corpus, sysdir, self.content_config(), self.cfg.exclude_seen, self.content_vectors())
            else:
                res = train_and_evaluate(s.model or s.name, self.corpus.root, sysdir, ov, train, exclude_seen=self.cfg.exclude_seen)
        mem = self._memory(t0)
        config = {**res["config"], **({"train": to_dict(train)} if s.kind == "seq" else {})}
        detail = {
            "label": s.label, "kind": s.kind, "valid_NDCG@10": res.get("valid_NDCG@10"),
            "best_epoch": res.get("best_epoch"), "epochs_run": res.get("epochs_run"),
            "examples_per_s": res.get("examples_per_s"), "memory": mem, "out_dir": str(sysdir),
            "worker_reported_peak_rss_mb": res.get("peak_rss_mb"), "history": res.get("history"),
            **({"recipe_file": s.recipe_path} if s.recipe_path else {}),
        }
        self._finish(s.name, sysdir, key, _entry(res, time.time() - t0, mem["max_process_mb"], config), detail)

    def _ttds(self, s: System, t0: float) -> None:
        tcfg = self.ttds_config(s, self.out / "systems" / s.name)
        tok_key = self.tokenizer_key(tcfg)
        shared = None
        if not tcfg.tokenizer_dir and tok_key in self.tokenizers:
            shared = self.tokenizers[tok_key]
            tcfg = dataclasses.replace(tcfg, tokenizer_dir=str(shared))
        keyed = ttds_keyed(tcfg)
        key = config_key(keyed)
        sysdir, done = self._prepare_dir(s.name, keyed)
        self.ttds_cfgs[s.name] = tcfg
        if done:
            tok_dir = Path(done["detail"]["tokenizer_dir"])
            if tok_dir.is_dir():  # a record restored from a ledger has no tokenizer beside it
                self.tokenizers.setdefault(tok_key, tok_dir)
            self._reuse(s.name, sysdir, done)
            return
        m = train_ttds(tcfg)
        t_end = time.time()
        tok_dir = Path(tcfg.tokenizer_dir) if tcfg.tokenizer_dir else sysdir / "tokenizer"
        self.tokenizers.setdefault(tok_key, tok_dir)
        test = m["test"]
        hist = m["history"]
        best = next((h for h in hist if h.get("epoch") == m["best_epoch"]), {})
        eval_s = float(m["wall_s"]["test_eval"])
        config = {**to_dict(tcfg), "ablation": s.ablation, "ablation_overrides": s.recipe.config}
        mem = self._memory(t0)
        eval_mem = self.rss.window(t_end - eval_s - 1.0, t_end)
        n_templates = len(test.get("per_template", {})) or 1
        detail = {
            "label": s.label, "kind": "ttds", "valid_NDCG@10": best.get("valid_NDCG@10"),
            "best_epoch": m["best_epoch"], "epochs_run": len(hist), "wall_parts_s": m["wall_s"],
            "users": test.get("users"), "per_template": test.get("per_template"), "popularity_same_users": m["popularity_test"],
            "source": m.get("source"), "tokenizer_dir": str(tok_dir), "tokenizer_shared": str(shared) if shared else None,
            "memory": mem, "history": hist, "out_dir": str(sysdir), **({"recipe_file": s.recipe_path} if s.recipe_path else {}),
            "test_eval": {
                "users": test.get("users"), "templates": n_templates, "wall_s": eval_s, "workers": tcfg.eval.workers,
                "users_per_s": round((test.get("users") or 0) * n_templates / max(eval_s, 1e-9), 2),
                "peak_rss_mb_per_worker": eval_mem.top("_Ranker") or eval_mem.top("MapWorker"),
                "driver_peak_rss_mb": round(eval_mem.driver_mb, 1),
            },
        }
        if s.name in self.with_retrieval:
            detail["note"] = (f"trained with loss.retrieval_weight={tcfg.loss.retrieval_weight} (the joint ranking loss of the "
                              f"retrieval fast path) because `{s.name}-retrieval` ranks with the same model; the paper's {s.label} has none.")
        if shared:
            detail["note"] = (detail.get("note", "") + f" Reuses the tokenizer warm-up of an earlier system with the same index config ({shared}): "
                              "wall s excludes it.").strip()
        self._finish(s.name, sysdir, key, _entry(test, time.time() - t0, mem["max_process_mb"], config), detail)

    def _rescore(self, s: System, t0: float) -> None:
        """The unit `s` of `self.source`, scored on test again under this run's protocol with the model
        it trained and selected there (recipe, epoch, validation figures: the source's). Nothing trains."""
        src_file = self.source / "systems" / s.name / "result.json"
        if not src_file.is_file():
            raise FileNotFoundError(f"{src_file}: this unit has not finished in {self.source}, so there is no model to score")
        src = json.loads(src_file.read_text())
        keyed = {"rescored": src["key"], "exclude_seen": self.cfg.exclude_seen}
        sysdir, done = self._prepare_dir(s.name, keyed)
        if s.kind == "ttds":
            self.ttds_cfgs[s.name] = tcfg = self.ttds_config(s, sysdir)
        if done:
            self._reuse(s.name, sysdir, done)
            return
        trained = Path(src["detail"]["out_dir"])
        model_dir = trained / "model" if s.kind == "ttds" else trained
        if not (model_dir.is_dir() if s.kind == "ttds" else (model_dir / "model.safetensors").is_file()):
            raise FileNotFoundError(f"{model_dir}: the model this unit trained is gone (a ledger restored on a fresh machine keeps "
                                    "records, not models), so it cannot be scored again without training it again")
        if s.kind == "ttds":
            test = score_ttds_test(tcfg, model_dir, self.corpus, sysdir / PER_USER_FILE)
            test.pop("popularity")
        else:
            test = score_seq_test(load_trained(model_dir), self.corpus, sysdir / PER_USER_FILE, self.cfg.exclude_seen)
        detail = {**src["detail"], **{k: test[k] for k in ("users", "per_template") if k in test}, "out_dir": str(sysdir),
                  "model_dir": str(model_dir), "memory": self._memory(t0), "rescore_s": round(time.time() - t0, 1),
                  "note": f"the model trained and selected in {trained}, scored again with exclude_seen={self.cfg.exclude_seen}; "
                          "wall s is that training run's"}
        detail.pop("test_eval", None)
        entry = {**src["entry"], **{k: test[k] for k in METRICS},
                 "config": {**src["entry"]["config"], "rescored": {"from": str(trained), "exclude_seen": self.cfg.exclude_seen}}}
        self._finish(s.name, sysdir, config_key(keyed), entry, detail)

    def _retrieval(self, s: System, t0: float) -> None:
        base = self.records[s.base]
        tcfg = self.ttds_cfgs[s.base]
        templates = tcfg.eval.template_ids()
        config = {
            "base": s.base, "ranker": "prompt -> backbone -> mean-pooled last hidden state -> id_head -> exact faiss inner product over L2-normalised item X",
            "templates": templates, "k": 10, "test_users": tcfg.eval.test_users, **({"exclude_seen": True} if tcfg.eval.exclude_seen else {}),
            "loss.retrieval_weight": tcfg.loss.retrieval_weight, "loss.retrieval_temperature": tcfg.loss.retrieval_temperature,
            "loss.retrieval_batch": tcfg.loss.retrieval_batch,
        }
        keyed = {"base": base["key"], **config}
        key = config_key(keyed)
        sysdir, done = self._prepare_dir(s.name, keyed)
        if done:
            self.records[s.name] = done
            return
        model_dir = Path(base["detail"].get("model_dir") or Path(base["detail"]["out_dir"]) / "model")  # a re-scored base: its source's
        res = evaluate_retrieval(model_dir, self.corpus, "test", templates, 10, tcfg.eval.test_users, tcfg.eval.batch_size,
                                 per_user_path=sysdir / PER_USER_FILE, exclude_seen=tcfg.eval.exclude_seen)
        mem = self._memory(t0)
        (sysdir / "metrics.json").write_text(json.dumps(res, indent=2, default=float))
        detail = {
            "label": s.label, "kind": "retrieval", "valid_NDCG@10": None, "best_epoch": base["detail"].get("best_epoch"),
            "epochs_run": base["detail"].get("epochs_run"), "users": res["users"], "per_template": res["per_template"],
            "memory": mem, "out_dir": str(sysdir), "model_dir": str(model_dir),
            "note": f"ranks with `{s.base}`'s model (selected on beam-search validation NDCG@10); wall s is its test evaluation only.",
            "test_eval": {"users": res["users"], "templates": len(templates), "wall_s": res["wall_s"], "workers": 1,
                          "users_per_s": res["users_per_s"], "peak_rss_mb_per_worker": {"driver": round(mem["driver_mb"], 1)}},
        }
        self._finish(s.name, sysdir, key, _entry(res, time.time() - t0, mem["max_process_mb"], config), detail)

    # -- perf
    def run_perf(self) -> dict:
        import ray

        pdir = self.out / "perf"
        pdir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {"machine": machine()}
        if self.cfg.perf_reference_items:
            out["decode_reference"] = _guard(lambda: {
                **perf.benchmark_decoding(perf.SpeedConfig(n_items=self.cfg.perf_reference_items, repeats=self.cfg.perf_repeats)),
                "items": self.cfg.perf_reference_items,
            })
        workers, why_one = perf.scaling_workers(self.cfg.use_gpu, float(ray.cluster_resources().get("GPU", 0)))
        ttds_name = next((n for n in ("ttds", *self.ttds_cfgs) if n in self.ttds_cfgs), None)
        if ttds_name:
            tcfg = self.ttds_cfgs[ttds_name]
            model_dir = Path(self.records[ttds_name]["detail"]["out_dir"]) / "model"
            out["decode_trained"] = _guard(lambda: {"system": ttds_name, **perf.decode_speed_trained(
                model_dir, self.corpus, self.cfg.perf_users, self.cfg.perf_batch, tcfg.eval.beam_width, 10, self.cfg.perf_repeats)})
            tok_dir = Path(self.records[ttds_name]["detail"]["tokenizer_dir"])
            out["train_throughput"] = {ttds_name: _guard(lambda: perf.scaling(
                lambda w: perf.ttds_throughput(tcfg, self.corpus, tok_dir, pdir / f"{ttds_name}_{w}w", w, self.cfg.perf_rows, self.cfg.cpus_per_worker),
                self.cfg.perf_train_repeats, workers,
            ))}
            _note(out["train_throughput"][ttds_name], why_one, f"first {self.cfg.perf_rows} task rows, one epoch, best of {self.cfg.perf_train_repeats} "
                  "alternating runs; job rate = rank 0's rate x workers (equal shards, lock-step DeepSpeed steps)")
        if "sasrec" in self.records:
            ov = self.seq_overrides(next(s for s in self.systems if s.name == "sasrec"))
            out.setdefault("train_throughput", {})["sasrec"] = _guard(lambda: perf.scaling(
                lambda w: perf.seq_throughput("sasrec", self.corpus, pdir, w, ov, self.cfg.cpus_per_worker, self.cfg.use_gpu),
                self.cfg.perf_train_repeats, workers))
            _note(out["train_throughput"]["sasrec"], why_one,
                  f"one full epoch, best of {self.cfg.perf_train_repeats} alternating runs; examples = next-item predictions, all ranks")

        out["test_eval"] = {n: r["detail"]["test_eval"] for n, r in self.records.items() if r["detail"].get("test_eval")}
        out["os_cpus"] = os.cpu_count()
        return out

    # -- all
    def results(self, perf: dict) -> tuple[dict, dict]:
        systems = {s.name: self.records[s.name]["entry"] for s in self.systems if s.name in self.records}
        details = {s.name: {**self.records[s.name]["detail"], "implied": s.implied} for s in self.systems if s.name in self.records}
        out = {"dataset": self.corpus.name, "systems": systems, "perf": perf}
        paired = self.paired(systems, details)
        if paired:
            out["paired"] = paired
        diagnostics = self.diagnostics(details)
        if diagnostics:
            out["diagnostics"] = diagnostics
        if self.cold is not None:
            out["cold_items"] = cold_summary(self.cold, self.cold_rows, details, self.cfg.cold_reference or None)
        return out, details

    def diagnostics(self, details: dict) -> dict:
        """Seen items, popularity bias and coverage of each system's test top 10 (`ttds.bench.diagnostics`)."""
        out: dict[str, Any] = {}
        for name, d in details.items():
            try:
                out[name] = ranking_diagnostics(read_per_user(d["out_dir"]), self.corpus)
            except (FileNotFoundError, ValueError) as e:  # an older run without ranked lists: say so, keep the table
                out[name] = {"error": str(e)[:300]}
        return out

    def paired(self, systems: dict, details: dict) -> dict:
        """Each TTDS-family system vs the strongest baseline on test NDCG@10, user by user
        (`ttds.bench.paired`): says whether a lead is beyond noise. Empty without a baseline."""
        baselines = [n for n in systems if is_baseline(n, details.get(n, {}))]
        if not baselines:
            return {}
        strongest = max(baselines, key=lambda n: systems[n]["NDCG@10"])
        out: dict[str, Any] = {"baseline": strongest, "metric": "NDCG@10", "systems": {}}
        for name in systems:
            if name in baselines:
                continue
            try:
                out["systems"][name] = paired_comparison(read_per_user(details[name]["out_dir"]), read_per_user(details[strongest]["out_dir"]))
            except (FileNotFoundError, ValueError) as e:  # a run from before per-user files: say so, keep the table
                out["systems"][name] = {"error": str(e)[:300]}
        return out

    def meta(self) -> dict:
        _, _, targets = self.corpus.eval_arrays("test")
        return {"items": self.corpus.n_items, "test_users": len(targets), "budget": self.budget_text(), "rss_method": self.rss.describe(),
                "exclude_seen": self.cfg.exclude_seen, "train_seed": self.cfg.train_seed, "machine": machine(),
                "failures": dict(self.failures)}

    def write_run_json(self) -> None:
        (self.out / "run.json").write_text(json.dumps({"config": dataclasses.asdict(self.cfg), "corpus": str(self.corpus.root),
                                                       "systems": [dataclasses.asdict(s) for s in self.systems], "machine": machine()}, indent=2))

    def run_one(self, s: System) -> None:
        """Reuse, train or re-score `s`, then rewrite results.json with every system done so far. A
        failure is recorded in `failures` and logged, not raised: one failed system must not cost the others (hours)."""
        log.info("=== %s (%s) ===", s.name, s.label)
        if s.kind == "retrieval" and s.base in self.failures:
            self.failures[s.name] = f"not run: its base {s.base} failed"
            return
        try:
            with console.scope(s.name):
                self.run_system(s)
        except Exception as e:  # noqa: BLE001 - see the docstring
            log.exception("%s failed", s.name)
            console.say(f"{s.name}: failed ({type(e).__name__}: {str(e)[:200]}); traceback in the log")
            self.failures[s.name] = f"{type(e).__name__}: {e}"[:500]
        write_results(self.out, *self.results({}), self.meta())  # a crash later keeps what is done

    def run(self, after: Callable[[System], None] | None = None) -> dict:
        """Every system in turn, then perf (--perf) and the results files. `after(s)` is called once
        each system is done (the confirmatory protocol re-scores and keeps its ledger unit by unit)."""
        if self.cfg.seeds or self.cfg.tune_trials:
            return run_confirm(self)
        self.write_run_json()
        with self.rss:
            for s in self.systems:
                self.run_one(s)
                if after is not None:
                    after(s)
            if self.cfg.perf:
                with console.stage("perf"):
                    perf = self.run_perf()
            else:
                perf = {}
        results, details = self.results(perf)
        paths = write_results(self.out, results, details, self.meta())
        if "cold_items" in results:
            paths["cold_md"] = self.out / "cold_items.md"
            paths["cold_md"].write_text(cold_table(results["cold_items"]))
        return {"results": results, "details": details, "failures": dict(self.failures), "paths": {k: str(v) for k, v in paths.items()}}


def _note(sc: dict, why_one: str | None, how: str) -> None:
    """Say how a throughput figure was taken, and why it has no 2-worker run where it has none."""
    if "error" not in sc:
        sc["note"] = how + (f"; {why_one}" if why_one else "")


def _guard(fn) -> dict:
    """A perf figure, or the reason it is missing (the table must survive a perf failure)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported in results.md, logged with traceback
        log.exception("perf measurement failed")
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPUs, {gpu}, {platform.platform()}, torch {torch.__version__}"


def run_benchmark(cfg: BenchConfig) -> dict:
    """Train and test every system of `cfg`, write results.{json,md,png}; returns them."""
    return Harness(cfg).run()
