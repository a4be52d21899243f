"""The TTDS recommender's hooks on the one training loop (`ttds.train.loop`).

Per epoch: stream this rank's share of task rows from Ray Data, turn them into prompts with
the *current* semantic IDs, optimise L = L_LLM + alpha (L_ID + beta L_token) under DeepSpeed;
before that (dynamic index) re-encode X, re-assign IDs and report churn; validate by
constrained beam search (or the item head) on a slice of users per rank, sums all-reduced.
The loop does the rest: the weight average, best/patience, checkpoints, reports, history.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttds.config import BackboneSection, TTDSJobConfig
from ttds.data.corpus import Corpus
from ttds.eval.evaluate import evaluate_next_item
from ttds.features.build import standardise_like
from ttds.index.table import SemanticIDTable, level_token
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.llm.dropout import add_residual_dropout
from ttds.llm.fusion import fusion_for_towers
from ttds.llm.item_embedding import build_item_embedding
from ttds.llm.model import TTDSModel
from ttds.llm.model_io import load_model, save_model
from ttds.llm.prompts import PromptBuilder, TokenTable, semantic_vocabulary
from ttds.rank.beam import BeamConfig
from ttds.rank.pad import left_pad
from ttds.rank.retrieval import retrieval_examples
from ttds.rank.trie import build_trie
from ttds.train import deepspeed_utils as dsu
from ttds.train.collectives import all_reduce_metrics
from ttds.train.launch import RunPlace
from ttds.train.loop import LoopConfig, LoopState, Trainer, fit, rank_and_world
from ttds.train.lr_schedule import lr_factor
from ttds.train.profile import OFF, Replayer, StageTimer, count_tokens, save_profile
from ttds.config import to_dict

TASKS = ("next_item", "user_pred", "comment", "text2id", "id2text")


@dataclass
class TTDSRunFacts:
    """What the driver derives for the workers from the corpus and the tokenizer folder."""

    corpus_dir: str
    tokenizer_dir: str
    best_dir: str  # the best model by validation (model_io layout)
    history_path: str
    towers: dict  # the twin towers' config (TwinTowerConfig.from_dict); "user" is None without user IDs
    has_users: bool  # users have semantic IDs (user tower on, table saved)
    x_dim: int
    text_dims: int
    source: str  # where X came from (features.source)
    text_source: bool  # re-encode text X with the backbone at each re-index
    item_levels: int
    user_levels: int
    codebook_size: int
    suffixes: int  # collision suffix tokens in the vocabulary
    warmup_epochs: int  # optim.warmup_epochs with -1 resolved
    ema_decay: float  # per step: optim.ema_decay, or set from optim.ema_epochs and the rows
    static_index: bool  # lsh / random / precomputed IDs: no towers learn, no L_token
    dynamic: bool  # IDs re-assigned while training (index.dynamic, learned kinds only)
    next_item_user_id: bool  # next-item prompts carry the user's ID (tasks.user_id_in_next_item, users have IDs)
    profile_steps: int = -1  # jobs/train_ttds.py --profile: -1 = off, 0 = time whole epochs, N = N steps per epoch
    task_rows: int = 0  # rows of the task-row dataset (the profile scales to an epoch with it)
    profile_path: str = ""  # where rank 0 writes the profile (ttds.train.profile.PROFILE_FILE)


@dataclass
class TTDSWork:
    """A TTDS worker's input: the job's typed config and the facts derived from it."""

    job: TTDSJobConfig
    run: TTDSRunFacts


def task_rates(cfg: TTDSJobConfig, has_users: bool) -> dict[str, float]:
    """Per-epoch sampling rate of each task's rows (0 = off)."""
    t = cfg.tasks
    high = t.high_order
    return {
        "next_item": t.next_item,
        "user_pred": t.user_pred if (high and has_users) else 0.0,
        "comment": t.comment if high else 0.0,
        "text2id": t.text2id if high else 0.0,
        "id2text": t.id2text if high else 0.0,
    }


def backbone_config(b: BackboneSection, seed: int):
    from ttds.llm.backbone import TINY_LLAMA, BackboneConfig

    finetune = b.finetune
    if finetune == "auto":
        finetune = "full" if b.name == TINY_LLAMA else "lora"
    return BackboneConfig(
        name=b.name, hidden_size=b.hidden_size, num_layers=b.num_layers, num_heads=b.num_heads,
        num_kv_heads=b.num_kv_heads, intermediate_size=b.intermediate_size, lora=finetune == "lora",
        full_finetune=finetune == "full", lora_r=b.lora_r, lora_alpha=b.lora_alpha, seed=seed,
        # fp32 parameters everywhere: DeepSpeed refuses mixed bf16 backbone / fp32 towers, and the
        # quantiser's distances need fp32; on CUDA the forward runs under bf16 autocast instead
        # (DeepSpeed's torch_autocast section, see dsu.deepspeed_config)
        dtype="float32",
    )


def code_vector_map(towers: TwinTowerTokenizer) -> dict[str, torch.Tensor]:
    """Token -> its code vector, the seed of the token's LLM embedding."""
    out = {}
    for kind, tower in (("item", towers.item), ("user", towers.user)):
        if tower is None:
            continue
        books = tower.code_vectors()
        for lv in range(books.shape[0]):
            for c in range(books.shape[1]):
                out[level_token(kind, lv, c)] = books[lv, c]
    return out


def build_model(w: TTDSWork, corpus: Corpus, tok_dir: Path):
    """Fresh model: backbone + semantic tokens (init from code vectors) + LoRA + towers + head."""
    from safetensors.torch import load_file

    from ttds.llm.backbone import add_semantic_tokens, apply_lora, load_backbone

    job, run = w.job, w.run
    towers = TwinTowerTokenizer(TwinTowerConfig.from_dict(run.towers))
    towers.load_saved(load_file(str(tok_dir / "tokenizer.safetensors")))
    bcfg = backbone_config(job.backbone, job.optim.seed)
    backbone, tokenizer = load_backbone(bcfg, corpus.item_titles)
    vocab = semantic_vocabulary(run.item_levels, run.user_levels if towers.user is not None else 0, run.codebook_size, run.suffixes)
    add_semantic_tokens(backbone, tokenizer, vocab, code_vector_map(towers), seed=job.optim.seed)
    backbone = apply_lora(backbone, bcfg)
    hidden = backbone.get_input_embeddings().weight.shape[1]
    fusion = fusion_for_towers(run.towers, run.item_levels, run.codebook_size, backbone, tokenizer)
    n_items = corpus.n_items if job.loss.item_head_weight > 0 else 0
    model = TTDSModel(backbone, towers, hidden, run.x_dim, fusion=fusion, n_items=n_items)
    model.set_item_embedding(build_item_embedding(job.backbone.item_embedding, corpus.n_items, run.item_levels,
                                                  run.codebook_size, tokenizer, backbone, model.item_head))
    return model, tokenizer


class Indexer:
    """Holds the ID tables in force and rebuilds them from the towers (dynamic index)."""

    def __init__(self, items: SemanticIDTable, users: SemanticIDTable | None, suffixes: int, rule: str = "fresh"):
        self.items, self.users, self.suffixes, self.rule = items, users, suffixes, rule

    def reassign(self, towers: TwinTowerTokenizer, item_x: np.ndarray, user_x: np.ndarray) -> dict:
        """Re-encode every entity; a kind whose collisions would need more suffix tokens than
        the vocabulary reserved keeps the IDs in force (reported, never silently)."""
        towers.eval()
        device = next(towers.parameters()).device  # the towers live on the worker's GPU, the X on the host
        stats: dict = {"reindexed": 0}
        item_codes = towers.encode_items(torch.as_tensor(item_x, device=device)).cpu().numpy()
        self.items = self._swap("item", self.items, item_codes, stats)
        if self.users is not None and towers.user is not None:
            user_codes = towers.encode_users(torch.as_tensor(user_x, device=device)).cpu().numpy()
            self.users = self._swap("user", self.users, user_codes, stats)
        stats["reindexed"] = int("item_churn" in stats)
        return stats

    def _swap(self, kind: str, table: SemanticIDTable, codes: np.ndarray, stats: dict) -> SemanticIDTable:
        """The table to use next: the re-indexed one, or `table` when it would need too many suffixes."""
        new = table.with_codes(codes, self.rule)
        if new.max_suffix >= self.suffixes:
            stats[f"{kind}_reindex_skipped_max_suffix"] = new.max_suffix
            return table
        stats.update({f"{kind}_churn": new.churn(table), f"{kind}_collision_rate": new.collision_rate})
        return new


def make_builder(tokenizer, corpus: Corpus, indexer: Indexer, w: TTDSWork, model: TTDSModel | None = None) -> PromptBuilder:
    """The prompts of the ID tables in force; `model`'s item input vectors follow the same tables."""
    if model is not None and model.item_embedding is not None:
        model.item_embedding.set_items(indexer.items)
    vocab = tokenizer.get_vocab()
    return PromptBuilder(
        tokenizer,
        TokenTable.from_table(indexer.items, vocab),
        TokenTable.from_table(indexer.users, vocab) if indexer.users is not None else None,
        item_titles=corpus.item_titles if corpus.has_item_text else None,
        user_texts=corpus.user_texts if corpus.has_user_text else None,
        max_len=w.job.backbone.max_len,
        next_item_user_id=w.run.next_item_user_id,
        instruction_words=w.job.tasks.instruction_words,
    )


def rows_to_examples(batch: dict, builder: PromptBuilder, rates: dict, rng: random.Random, spans: list | None = None,
                     kinds: list | None = None):
    """Sample rows by task rate, build prompts; never empty (ranks must step together).

    `spans` (a list, filled in place): (row, query position, item) of every item in the
    next-item rows, for the item head (positions in the unpadded row). `kinds` (a list, filled
    in place, profiled runs): (task, template) of every example."""
    seqs, labels = [], []
    for r, (task, anchor, seq) in enumerate(zip(batch["task"], batch["anchor"], batch["seq"])):
        task = str(task)
        last_chance = r == len(batch["task"]) - 1 and not seqs
        if rng.random() >= rates[task] and not last_chance:
            continue
        t = rng.randrange(builder.n_templates(task))
        if task == "next_item":
            ids, lab, row_spans = builder.next_item_spans(int(anchor), seq, t)
            if spans is not None:
                spans += [(len(seqs), q, i) for q, i in row_spans]
        elif task == "user_pred":
            ids, lab = builder.user_pred(int(anchor), seq, t)
        elif task == "comment":
            ids, lab = builder.comment(int(anchor), list(seq), t)
        elif task == "text2id":
            ids, lab = builder.text2id(int(anchor), t)
        else:
            ids, lab = builder.id2text(int(anchor), t)
        seqs.append(ids)
        labels.append(lab)
        if kinds is not None:
            kinds.append((task, t))
    return seqs, labels


def regroup_by_length(steps: list[list[tuple]], rng: random.Random) -> list[list[tuple]]:
    """The same examples in as many steps, each step of near lengths (`optim.length_group_steps`).

    Examples (tuples whose first item is the token ids) are sorted by length and cut into
    len(steps) runs of near-equal count, in random order; every step keeps at least one example
    when every input step had one (ranks must step together)."""
    if len(steps) < 2:
        return steps
    flat = sorted((e for step in steps for e in step), key=lambda e: len(e[0]))
    out = [[flat[j] for j in cut] for cut in np.array_split(np.arange(len(flat)), len(steps))]
    rng.shuffle(out)
    return out


def eval_slice(corpus: Corpus, split: str, limit: int, seed: int, rank: int, world: int):
    """This rank's share (every world-th from `rank`) of `limit` users drawn with `seed` (0 = all)."""
    uids, hists, targets = corpus.eval_arrays(split)
    if limit and limit < len(uids):
        pick = np.random.default_rng(seed).choice(len(uids), limit, replace=False)
        pick.sort()
        uids, hists, targets = uids[pick], [hists[i] for i in pick], targets[pick]
    sl = slice(rank, None, world)
    return uids[sl], hists[sl], targets[sl]


class TTDSTrainer(Trainer):
    """The TTDS model's hooks: its DeepSpeed engine, task-row stream, re-indexing and validation."""

    def __init__(self, w: TTDSWork, rank: int, world: int):
        from safetensors.numpy import load_file as load_np

        self.w, self.job, self.run, self.rank, self.world = w, w.job, w.run, rank, world
        self.rng = random.Random(self.job.optim.seed * 7919 + rank)
        self.corpus = Corpus.open(self.run.corpus_dir)
        self.tok_dir = Path(self.run.tokenizer_dir)
        feats = load_np(str(self.tok_dir / "features.safetensors"))
        self.item_x, self.user_x = feats["item_x"], feats["user_x"]
        self.rates = task_rates(self.job, self.run.has_users)
        # jobs/train_ttds.py --profile: stage timers (ttds.train.profile); OFF costs nothing
        self.prof = StageTimer() if (self.run.profile_steps >= 0 and rank == 0) else OFF
        self.replayer: Replayer | None = None
        self._t_epoch_end: float | None = None

    def start(self, resume: Path | None, state: LoopState) -> None:
        import ray.train

        job, run = self.job, self.run
        if resume is not None:
            loaded = load_model(resume, trainable=True)
            model, tokenizer = loaded.model, loaded.tokenizer
            self.indexer = Indexer(loaded.items, loaded.users, run.suffixes, job.index.reindex_rule)
            if (resume / ITEM_X_FILE).exists():  # re-encoded text X of a dynamic run
                from safetensors.numpy import load_file as load_np

                self.item_x = load_np(str(resume / ITEM_X_FILE))["item_x"]
        else:
            model, tokenizer = build_model(self.w, self.corpus, self.tok_dir)
            users = SemanticIDTable.load(self.tok_dir, "user") if model.towers.user is not None and (self.tok_dir / "user_ids.parquet").exists() else None
            self.indexer = Indexer(SemanticIDTable.load(self.tok_dir, "item"), users, run.suffixes, job.index.reindex_rule)
        # training-only dropout hooks (not saved with the model, so a resumed run adds them again)
        dropout = job.backbone.dropout
        hooked = add_residual_dropout(model.backbone, dropout)
        if dropout > 0 and self.rank == 0:
            print(f"backbone.dropout={dropout}: {hooked} dropout hooks" + ("" if hooked else
                  " (none: this architecture names no embed_tokens/self_attn/mlp modules, so no dropout is applied)"), flush=True)
        self.model, self.tokenizer = model, tokenizer
        if self.prof.enabled:
            model.profiler = self.prof
        self.builder = make_builder(tokenizer, self.corpus, self.indexer, self.w, model)
        self.trie = build_trie(self.builder, len(tokenizer))

        body = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.") and "embed_tokens" not in n and "lm_head" not in n]
        tower = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("towers.")]
        taken = {id(p) for p in body + tower}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
        # group 0 (backbone body) is frozen during warm-up; towers move slower than the LLM so
        # re-assigned IDs change gradually (reported as churn)
        groups = [{"params": body}, {"params": rest}, {"params": tower, "lr": job.optim.lr * job.index.joint_lr_scale}]
        self.engine = dsu.initialize(model, lr=job.optim.lr, stage=job.train.zero_stage, micro_batch=job.optim.batch_size, param_groups=groups,
                                     weight_decay=job.optim.weight_decay, offload=job.train.offload, autocast=torch.cuda.is_available(),  # bf16 compute on GPUs
                                     torch_when_alone=not job.train.deepspeed_when_alone)
        if model.item_embedding is not None and model.item_embedding.tied and hasattr(model.item_head.weight, "ds_id"):
            # ZeRO-3: the tied input vectors read the item head's partitioned weight outside the head's
            # own forward; DeepSpeed gathers it for the embedding hook too once told
            import deepspeed

            deepspeed.zero.register_external_parameter(model.item_embedding, model.item_head.weight)
        self.base_lrs = [g["lr"] for g in self.engine.optimizer.param_groups]  # body, rest, towers (optim.lr_schedule scales them)
        self.shard = ray.train.get_dataset_shard("train")
        self.alpha = job.loss.alpha if job.loss.dmvae else 0.0
        self.beta = job.loss.beta if (job.loss.dmvae and not self.run.static_index) else 0.0
        self.item_x_t, self.user_x_t = torch.as_tensor(self.item_x), torch.as_tensor(self.user_x)
        self.ret_w = job.loss.retrieval_weight  # optional retrieval fast-path loss (ttds.rank.retrieval)
        self.ret_users = [u for u, s in enumerate(self.corpus.train_sequences) if len(s) >= 2] if self.ret_w > 0 else []
        self.item_w = job.loss.item_head_weight  # optional item head (TTDSModel.item_head)
        if self.item_w > 0 and model.item_head is None:
            raise ValueError("loss.item_head_weight > 0 but the model has no item head (resumed from a model trained without one)")
        if job.backbone.item_embedding != "none" and model.item_embedding is None:
            raise ValueError("backbone.item_embedding is set but the model has none (resumed from a model trained without it)")

    def before_epoch(self, epoch: int) -> dict:
        if self._t_epoch_end is not None:  # profiled: the loop's checkpoint copy + report since the last hook
            self.prof.add("between_epochs", time.perf_counter() - self._t_epoch_end)
        if not (self.run.dynamic and epoch > 0 and epoch % max(1, self.job.index.reindex_every) == 0):
            return {}
        # Re-assign IDs at the START of an epoch, so the epoch trains on the IDs it is then
        # validated and checkpointed with. Re-assigning at the end of an epoch (before
        # validation) left 20-28% of items with IDs the LLM had never seen in every saved
        # model (measured on Scientific: TTDS validated at half the static-ID TIGER's NDCG).
        prof = self.prof
        with prof.section("reindex"):
            with dsu.gathered(self.model.parameters()):
                if self.run.text_source:
                    with prof.section("reindex/text_x"):
                        self.item_x = recompute_text_x(self.model, self.tokenizer, self.corpus, self.job, self.run, self.item_x)
                        self.item_x_t = torch.as_tensor(self.item_x)
                with prof.section("reindex/assign"):
                    reindex = self.indexer.reassign(self.model.towers, self.item_x, self.user_x)
            with prof.section("reindex/prompts"):
                self.builder = make_builder(self.tokenizer, self.corpus, self.indexer, self.w, self.model)
            with prof.section("reindex/trie"):
                self.trie = build_trie(self.builder, len(self.tokenizer))
        return reindex

    def train_epoch(self, epoch: int) -> dict:
        job, engine, model, builder = self.job, self.engine, self.model, self.builder
        frozen = epoch < self.run.warmup_epochs
        scale = lr_factor(job.optim.lr_schedule, epoch, job.optim.epochs, self.run.warmup_epochs, job.optim.min_lr_ratio)
        for i, group in enumerate(engine.optimizer.param_groups):
            group["lr"] = 0.0 if (i == 0 and frozen) else self.base_lrs[i] * scale
        model.train()
        t0, n_examples, steps = time.time(), 0, 0
        sums = {"loss": 0.0, "llm_loss": 0.0, "id_loss": 0.0, "token_loss": 0.0, **({"retrieval_loss": 0.0} if self.ret_w > 0 else {}),
                **({"item_head_loss": 0.0} if self.item_w > 0 else {})}
        prof = self.prof
        step_examples = self._step_examples(epoch)
        while True:
            t_step = time.perf_counter()
            step = next(step_examples, None)
            if step is None:
                break
            seqs, labels, spans, kinds = step
            with prof.section("data/collate"):
                ids, mask, lab = left_pad(seqs, builder.pad_id, labels)
                kw = {}
                if self.item_w > 0:
                    kw.update(item_head_kwargs(spans, [len(x) for x in seqs], ids.shape[1]))
                if self.alpha > 0:
                    pick = torch.randint(0, len(self.item_x_t), (job.loss.id_batch,))
                    id_ids, id_mask, _ = left_pad(builder.id_sequences(pick.tolist()), builder.pad_id)
                    kw.update({"id_input_ids": id_ids, "id_attention_mask": id_mask, "id_targets": self.item_x_t[pick], "item_x": self.item_x_t[pick]})
                    if model.towers.user is not None:
                        kw["user_x"] = self.user_x_t[torch.randint(0, len(self.user_x_t), (job.loss.id_batch,))]
                if self.ret_w > 0:
                    kw.update(retrieval_kwargs(builder, self.corpus, self.ret_users, job, self.rng, self.item_x_t))
                ret_kw = {"ret_weight": self.ret_w, "ret_temperature": job.loss.retrieval_temperature} if self.ret_w > 0 else {}
                if self.item_w > 0:
                    ret_kw["item_weight"] = self.item_w
                    ret_kw["item_negatives"] = job.loss.item_head_negatives  # 0 = full softmax
            with prof.section("forward"):
                out = engine(ids.to(engine.device), mask.to(engine.device), lab.to(engine.device), alpha=self.alpha, beta=self.beta,
                             label_smoothing=job.loss.label_smoothing, **ret_kw, **{k: v.to(engine.device) for k, v in kw.items()})
            with prof.section("backward"):
                engine.backward(out["loss"])
            with prof.section("optimizer_step"):
                engine.step()
            with prof.section("ema_and_sums"):
                if self.average is not None:
                    self.average.update()
                for k in sums:
                    sums[k] += float(out[k].detach())
            n_examples += len(seqs)
            steps += 1
            if prof.enabled:
                prof.add("step_total" if steps > 1 else "first_step", time.perf_counter() - t_step)
                prof.add("step", 0.0)
                self._profile_step(seqs, labels, kinds, ids, mask, lab, kw, ret_kw, steps)
                if 0 < self.run.profile_steps <= steps:
                    break  # a bounded profile: the table scales these steps to the epoch
            if self.rank == 0 and job.train.log_every and steps % job.train.log_every == 0:
                # progress inside a long epoch (Ray shows worker logs on the driver)
                print(f"epoch {epoch} step {steps}: {n_examples} examples, {n_examples / (time.time() - t0):.1f} ex/s, "
                      f"loss {sums['loss'] / steps:.4f} (llm {sums['llm_loss'] / steps:.4f})", flush=True)
        train_s = time.time() - t0
        if prof.enabled:
            prof.count("epochs", 1)
        metrics = {"frozen_backbone": int(frozen), "lr_scale": scale, "examples_per_s": n_examples / max(train_s, 1e-9), "train_s": train_s,
                   **{k: v / max(steps, 1) for k, v in sums.items()}}
        if torch.cuda.is_available():  # the figure that decides ZeRO stage / offload on a GPU cluster
            metrics["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return metrics

    def _step_examples(self, epoch: int):
        """(seqs, labels, item-head spans, (task, template) kinds) of every step of this rank's epoch.

        One step per `optim.batch_size` rows streamed, as ever (ranks step together); with
        `optim.length_group_steps` G > 1, G steps' examples are pooled, sorted by length and
        cut again into G steps (less padding: the profile's padded vs real tokens)."""
        job, prof, builder = self.job, self.prof, self.builder
        group, batch_size = job.optim.length_group_steps, job.optim.batch_size
        batches = iter(self.shard.iter_batches(batch_size=batch_size * group, batch_format="numpy", local_shuffle_buffer_size=4096,
                                               local_shuffle_seed=job.optim.seed + epoch))
        first = True
        while True:
            with prof.section("data/first_batch" if first else "data/next_batch"):  # the first: Ray Data's start, once per epoch
                batch = next(batches, None)
            first = False
            if batch is None:
                return
            with prof.section("data/prompts"):
                rows = len(batch["task"])
                pool: list[tuple] = []  # (ids, labels, [(query position, item)], (task, template))
                for s in range(0, rows, batch_size):
                    part = {k: v[s : s + batch_size] for k, v in batch.items()}
                    spans: list | None = [] if self.item_w > 0 else None
                    kinds: list = []
                    seqs, labels = rows_to_examples(part, builder, self.rates, self.rng, spans, kinds)
                    per_row: list[list] = [[] for _ in seqs]
                    for r, q, i in spans or []:
                        per_row[r].append((q, i))
                    pool.append(list(zip(seqs, labels, per_row, kinds)))
                if group > 1:
                    pool = regroup_by_length(pool, self.rng)
            for part in pool:
                seqs = [e[0] for e in part]
                spans = [(r, q, i) for r, e in enumerate(part) for q, i in e[2]] if self.item_w > 0 else None
                yield seqs, [e[1] for e in part], spans, [e[3] for e in part]

    def validate(self) -> dict:
        ev = self.job.eval
        with self.prof.section("validate"):
            uids, hists, targets = eval_slice(self.corpus, "valid", ev.valid_users, self.job.optim.seed, self.rank, self.world)
            beam = BeamConfig(beam_width=ev.beam_width, top_k=ev.top_k)
            item_head = self.model.item_head if ev.rank_by == "item_head" else None
            accs = evaluate_next_item(self.model.backbone, self.builder, self.trie, uids, hists, targets, [0], beam, self.job.data.max_history,
                                      ev.batch_size, exclude_seen=ev.exclude_seen, item_head=item_head)
            result = {f"valid_{k}": v for k, v in all_reduce_metrics(accs[0]).result().items()}
        self._profile_mark()
        return result

    def _save_model(self, directory, metrics: dict) -> None:
        save_model(directory, self.model, self.tokenizer, self.indexer.items, self.indexer.users, model_meta(self.w, metrics),
                   self.tok_dir / "features.safetensors")

    def save_best(self, metrics: dict) -> None:
        with self.prof.section("save_best"):
            self._save_model(self.run.best_dir, metrics)  # the weights just validated: the average, when there is one
        self._profile_mark()

    def save(self, directory: Path, metrics: dict) -> None:
        with self.prof.section("checkpoint"):
            self._save_model(directory, metrics)
            if self.run.dynamic and self.run.text_source:
                from safetensors.numpy import save_file as save_np

                save_np({"item_x": self.item_x}, str(directory / ITEM_X_FILE))
        self._profile_mark()

    # -- jobs/train_ttds.py --profile (ttds.train.profile) ---------------------------------
    REPLAY_EVERY, REPLAY_UNTIL = 4, 200  # every 4th of an epoch's first 200 profiled steps is replayed in plain torch (per-term costs, DeepSpeed's overhead)

    def _profile_step(self, seqs, labels, kinds, ids, mask, lab, kw: dict, ret_kw: dict, steps: int) -> None:
        prof = self.prof
        count_tokens(prof, [k for k, _ in kinds], [len(x) for x in seqs], labels, ids.shape[1])
        words = self.builder.templates
        prof.count("prompt_words", sum(sum(len(part) for part in words[task][t] if not isinstance(part, str)) for task, t in kinds))
        if steps % self.REPLAY_EVERY == 0 and steps <= self.REPLAY_UNTIL:
            if self.replayer is None:
                import tempfile

                with tempfile.TemporaryDirectory() as d:  # a private copy of the model, hooks and all
                    self._save_model(Path(d), {"epoch": -1})
                    copy = load_model(Path(d), trainable=True).model
                add_residual_dropout(copy.backbone, self.job.backbone.dropout)
                self.replayer = Replayer(copy, self.job.optim.lr)
            self.replayer.replay(prof, (ids, mask, lab), {"alpha": self.alpha, "beta": self.beta, "label_smoothing": self.job.loss.label_smoothing,
                                                          **ret_kw, **kw})

    def _profile_mark(self) -> None:
        """Rank 0 of a profiled run: write the figures so far; the clock of the between-epochs gap restarts."""
        if not self.prof.enabled:
            return
        import os

        job = self.job
        save_profile(Path(self.run.profile_path), self.prof, {
            "corpus": Path(self.run.corpus_dir).name, "batch_size": job.optim.batch_size,
            "world": self.world, "threads": torch.get_num_threads(), "epoch_steps": -(-self.run.task_rows // (self.world * job.optim.batch_size)),
            "epochs_profiled": int(self.prof.counts.get("epochs", 0)), "valid_users": job.eval.valid_users or len(self.corpus.eval_arrays("valid")[0]),
            "rank_by": job.eval.rank_by, "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        })
        self._t_epoch_end = time.perf_counter()

    def gathered(self):
        return dsu.gathered(self.model.parameters())


ITEM_X_FILE = "item_x.safetensors"  # a dynamic text run's re-encoded item X, in its checkpoints


def ttds_worker(w: TTDSWork, place: RunPlace) -> None:
    """The Ray Train worker of the TTDS job: its hooks on the one loop."""
    rank, world = rank_and_world(place)
    o = w.job.optim
    loop = LoopConfig(epochs=o.epochs, seed=o.seed, seed_per_rank=True, patience=o.patience, metric="valid_NDCG@10",
                      time_budget_s=o.time_budget_s, ema_decay=w.run.ema_decay, validate_live=True, history_path=w.run.history_path)
    fit(TTDSTrainer(w, rank, world), loop, place)


def model_meta(w: TTDSWork, metrics: dict) -> dict:
    job, run = w.job, w.run
    return {
        "epoch": metrics["epoch"],
        "max_history": job.data.max_history,
        "max_len": job.backbone.max_len,
        "next_item_user_id": run.next_item_user_id,
        "instruction_words": job.tasks.instruction_words,  # ttds.llm.model_io.prompt_builder
        "suffixes": run.suffixes,
        "item_levels": run.item_levels,
        "user_levels": run.user_levels,
        "codebook_size": run.codebook_size,
        "corpus_dir": run.corpus_dir,
        "source": run.source,
        "exclude_seen": job.eval.exclude_seen,  # how it was selected; jobs/evaluate.py's default
        "retrieval_pool": "last" if job.loss.retrieval_weight > 0 else "mean",  # ttds.rank.retrieval.pool_of
        "rank_by": job.eval.rank_by,  # how it was selected; jobs/evaluate.py's default
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "config": to_dict(job),
    }


def recompute_text_x(model: TTDSModel, tokenizer, corpus: Corpus, job: TTDSJobConfig, run: TTDSRunFacts, old_x: np.ndarray) -> np.ndarray:
    """X of items re-encoded by the backbone as it is now (the 'dynamic' part for text X)."""
    from ttds.llm.backbone import encode_texts

    vecs = encode_texts(model.backbone, tokenizer, corpus.item_texts, batch_size=32, max_length=job.index.features.text_max_length)
    return standardise_like(vecs, old_x, run.text_dims)


def retrieval_kwargs(builder: PromptBuilder, corpus: Corpus, users: list[int], job: TTDSJobConfig, rng: random.Random, item_x_t: torch.Tensor) -> dict:
    """Model kwargs of the retrieval loss: next-item prompts of random training users (every
    rank the same count, so ranks step together) scored against the whole catalogue's X."""
    pick = [users[rng.randrange(len(users))] for _ in range(job.loss.retrieval_batch)]
    prompts, targets = retrieval_examples(builder, corpus.train_sequences, pick, job.data.max_history, rng)
    ids, mask, _ = left_pad(prompts, builder.pad_id)
    return {"ret_input_ids": ids, "ret_attention_mask": mask, "ret_targets": torch.as_tensor(targets), "ret_item_x": item_x_t}


def item_head_kwargs(spans: list[tuple[int, int, int]], lengths: list[int], width: int) -> dict:
    """Model kwargs of the item-head loss: (row, position) in the LEFT-padded batch and the item."""
    rows = [(r, width - lengths[r] + q) for r, q, _ in spans]
    return {"item_positions": torch.as_tensor(rows, dtype=torch.long).reshape(-1, 2),
            "item_targets": torch.as_tensor([i for _, _, i in spans], dtype=torch.long)}
