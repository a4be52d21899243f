"""Every configuration section of ttds, in one place: the schema the loader builds and checks.

Why one module: a job's config is composed of sections (data, index, backbone, tasks, loss,
optim, eval, train; the benchmark's, the recommender's, the baselines'), and a reader looking
for "what can I set, to what, and why" should find all of it here, and in the reference
generated from it (docs/configuration.md, `python -m ttds.config.reference`).

Allowed values are `Literal` types: the loader refuses anything else by name, and each section
checks its own values when it is built (`Section.__post_init__`), whether it came from YAML,
the command line or code. Checks across sections (a ranker that needs a trained head) live in
`ttds.config.checks`. The comment beside a field says what it does; a default that was a
decision says on what figures it was decided (docs/findings.md has the history).

Bottom layer: this module imports nothing from the rest of ttds.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ttds.config.checks import check_ttds_job, ema_span_problem
from ttds.config.loader import ConfigError, from_dict

__all__ = [
    "BackboneSection", "BenchConfig", "CollaborativeConfig", "DataConfig", "EvalConfig", "FeatureConfig",
    "FeatureSource", "GRU4RecConfig", "IndexConfig", "IndexKind", "LightGCNConfig", "LossConfig", "LrSchedule",
    "OptimConfig", "RankBy", "RecommenderConfig", "SASRecConfig", "Section", "TaskMix", "TokenizerJobConfig",
    "TrainConfig", "TTDSJobConfig", "TuneSettings", "allowed",
]

# ----------------------------------------------------------------------------- allowed values
IndexKind = Literal["rq", "kway_masked", "moc", "lsh", "random", "precomputed"]
LastLevel = Literal["balanced", "nearest"]
KWayCombine = Literal["sum", "concat"]
ReindexRule = Literal["fresh", "sticky_last"]
ReencodeText = Literal["auto", "true", "false"]
FeatureSource = Literal["auto", "text", "collaborative", "text+collaborative", "lightgcn", "text+lightgcn"]
Finetune = Literal["auto", "lora", "full"]
ItemEmbeddingMode = Literal["none", "separate", "tied"]
LrSchedule = Literal["constant", "cosine"]
RankBy = Literal["beam", "item_head"]
ZeroStage = Literal[0, 1, 2, 3]
Device = Literal["auto", "cpu", "cuda"]
TuneSearch = Literal["random", "optuna", "hyperopt"]
TuneScheduler = Literal["asha", "fifo"]


def allowed(literal: Any) -> tuple:
    """The values of a Literal type, e.g. `allowed(IndexKind)` -> ("rq", ...)."""
    return typing.get_args(literal)


_HINTS: dict[type, dict[str, Any]] = {}


def _literal_problems(section: Any) -> list[str]:
    cls = type(section)
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(section):
        tp = _HINTS[cls][f.name]
        if typing.get_origin(tp) is Literal:
            v = getattr(section, f.name)
            if not any(v == a and type(v) is type(a) for a in typing.get_args(tp)):
                out.append(f"{f.name}={v!r}: expected one of {', '.join(str(a) for a in typing.get_args(tp))}")
    return out


class Section:
    """Base of every config dataclass: checks its `Literal` fields and its own `problems()` as
    it is built, so an invalid section cannot exist (from YAML, the CLI or code alike)."""

    def __post_init__(self) -> None:
        problems = self.all_problems()
        if problems:
            raise ConfigError(problems)

    def all_problems(self) -> list[str]:
        """Values outside a `Literal` field's list, then `problems()`."""
        return _literal_problems(self) + self.problems()

    def problems(self) -> list[str]:
        """What is wrong with this section's values (one message per problem; keys without the
        section's prefix, which the loader adds). Empty when nothing is."""
        return []


def _in_unit(name: str, v: float, closed: bool = False) -> list[str]:
    ok = 0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0
    return [] if ok else [f"{name}={v}: expected a value in [0, 1{']' if closed else ')'}"]


def _at_least(section: Any, names: tuple[str, ...], low: float) -> list[str]:
    return [f"{n}={getattr(section, n)}: expected a value >= {low:g}" for n in names if getattr(section, n) < low]


# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig(Section):
    """The corpus a job trains and evaluates on."""

    corpus: str = "synthetic"  # "synthetic", a prepared corpus folder, or a raw LC-Rec folder
    seed: int = 0  # seed of the synthetic corpus
    max_history: int = 20  # items of history in a prompt

    def problems(self) -> list[str]:
        return _at_least(self, ("max_history",), 1)


@dataclass
class CollaborativeConfig(Section):
    """Collaborative item vectors learned on the training split (`ttds.features.collaborative`):
    the tokenizer input X of corpora without item text."""

    dim: int = 64
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 5e-3
    weight_decay: float = 1e-6
    seed: int = 0

    def problems(self) -> list[str]:
        return _at_least(self, ("dim", "epochs", "batch_size"), 1)


@dataclass
class LightGCNConfig(Section):
    """LightGCN graph vectors of users and items (BPR on the training split; `ttds.features.lightgcn`)."""

    dim: int = 64
    layers: int = 3  # propagation layers K
    epochs: int = 40
    batch_size: int = 2048  # BPR triples per step (per worker)
    lr: float = 5e-3
    reg: float = 1e-4  # L2 on the layer-0 embeddings of each triple (LightGCN's lambda)
    seed: int = 0
    ray_train: bool = True  # False: train in the calling process
    num_workers: int = 1  # Ray Train workers (ray_train=True)
    cpus_per_worker: float = 0.5

    def problems(self) -> list[str]:
        return _at_least(self, ("dim", "epochs", "batch_size", "num_workers"), 1) + _at_least(self, ("layers",), 0)


@dataclass
class FeatureConfig(Section):
    """The tokenizer inputs X of items and users (`ttds.features.build`)."""

    source: FeatureSource = "auto"  # auto = text when items have text, else collaborative
    text_backbone: str = "tiny-llama"  # tiny-llama | smollm2-135m | a local HF model folder
    text_max_length: int = 96
    text_batch_size: int = 16
    text_actors: int = 1  # Ray Data actors encoding text in parallel
    collaborative: CollaborativeConfig = field(default_factory=CollaborativeConfig)
    lightgcn: LightGCNConfig = field(default_factory=LightGCNConfig)

    def problems(self) -> list[str]:
        return _at_least(self, ("text_max_length", "text_batch_size", "text_actors"), 1)


@dataclass
class TrainConfig(Section):
    """How a job runs on Ray Train (`ttds.train.launch.run_trainer`): workers, resources, ZeRO, retries."""

    num_workers: int = 1
    cpus_per_worker: float = 0.5  # fractional so Ray Data tasks can run beside the workers
    use_gpu: bool = False  # True on GPU clusters: one GPU per worker
    zero_stage: ZeroStage = 2  # DeepSpeed ZeRO stage
    offload: bool = False  # ZeRO-2/3 CPU offload of optimizer state (+ params at ZeRO-3): big backbones (TTDS job)
    max_failures: int = 2  # worker failures retried from the last checkpoint
    resume: bool = True  # a re-run in the same run folder continues from its newest checkpoint
    keep_checkpoints: int = 2
    log_every: int = 100  # a progress line every this many steps inside an epoch (TTDS job, rank 0; 0 = none)
    # TTDS job, one worker on CPU: False = plain torch AdamW with DeepSpeed's clipping (ZeRO has
    # nothing to partition there and its per-step copies cost; ttds.train.deepspeed_utils.TorchEngine);
    # True = DeepSpeed's engine all the same
    deepspeed_when_alone: bool = False

    def problems(self) -> list[str]:
        out = _at_least(self, ("num_workers", "keep_checkpoints"), 1) + _at_least(self, ("max_failures",), 0)
        if self.cpus_per_worker <= 0:
            out.append(f"cpus_per_worker={self.cpus_per_worker}: expected a value > 0")
        return out


@dataclass
class IndexConfig(Section):
    """The semantic token generator (TTDS defaults: M=4 levels, N=256 codes, code dim 256)."""

    kind: IndexKind = "rq"  # rq | kway_masked (TokenRec) | moc (Mixture-of-Codes) | lsh | random | precomputed (the corpus's shipped X.index.json)
    mask_ratio: float = 0.2  # kway_masked: share of input features each sub-encoder loses in training
    kway_combine: KWayCombine = "sum"  # kway_masked: decoder input from the K code vectors
    moc_codebooks: int = 0  # moc: parallel codebooks for items (the scaling factor); 0 = levels
    levels: int = 4
    codebook_size: int = 256
    code_dim: int = 256
    hidden_dims: list[int] = field(default_factory=lambda: [512])
    commitment: float = 0.25
    last_level: LastLevel = "balanced"  # rq: balanced = entities sharing M-1 codes get distinct last codes (LC-Rec's uniform mapping) | nearest
    user_tower: bool = True  # False = STDS ablation (users have no semantic ID)
    user_levels: int = 3  # users: fewer levels suffice and keep prompts short
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    codebook_lr_scale: float = 10.0
    restart_every: int = 1
    init_samples: int = 20000
    seed: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # TTDS-only: the index is re-learned while the recommender trains
    dynamic: bool = True  # False = static index (TTSS / TIGER-style)
    reindex_every: int = 1  # epochs between ID re-assignments
    reindex_rule: ReindexRule = "fresh"  # fresh = the towers' codes as they are | sticky_last = keep the last code while the first M-1 hold (less churn)
    max_suffix_tokens: int = 16  # collision suffix tokens reserved in the LLM vocabulary
    reencode_text: ReencodeText = "auto"  # re-encode text X with the current backbone at re-index: auto (pretrained backbones only) | true | false
    joint_lr_scale: float = 0.1  # tower learning rate relative to the LLM's during joint training (limits ID churn)

    def problems(self) -> list[str]:
        out = _at_least(self, ("levels", "codebook_size", "code_dim", "user_levels", "epochs", "batch_size"), 1)
        out += _at_least(self, ("moc_codebooks", "max_suffix_tokens"), 0) + _in_unit("mask_ratio", self.mask_ratio)
        return out

    def towers(self, item_dim: int, user_dim: int | None) -> dict:
        """The twin-tower config (`ttds.index.towers.TwinTowerConfig.from_dict`) for inputs of these widths."""

        def tower(dim: int, levels: int) -> dict:
            t = {
                "input_dim": dim, "code_dim": self.code_dim, "levels": levels, "codebook_size": self.codebook_size,
                "hidden_dims": tuple(self.hidden_dims), "commitment": self.commitment, "seed": self.seed,
            }
            t["last_level"] = self.last_level  # every learned kind (rq, kway_masked, moc) has the rule
            if self.kind == "kway_masked":  # learned kinds other than rq name themselves (ttds.index.kinds)
                t.update({"kind": self.kind, "mask_ratio": self.mask_ratio, "combine": self.kway_combine})
            elif self.kind == "moc":
                t["kind"] = self.kind
            return t

        item_levels = self.moc_codebooks if (self.kind == "moc" and self.moc_codebooks > 0) else self.levels
        return {
            "item": tower(item_dim, item_levels),
            "user": tower(user_dim, self.user_levels) if (self.user_tower and user_dim) else None,
        }


@dataclass
class TokenizerJobConfig(Section):
    """jobs/train_tokenizer.py: the twin-tower tokenizer alone."""

    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = ""  # default: runs/train_tokenizer/<timestamp>


@dataclass
class BackboneSection(Section):
    """The LLM (`ttds.llm.backbone`): built-in tiny Llama or a pretrained causal LM, and how it is fine-tuned."""

    name: str = "tiny-llama"  # tiny-llama | smollm2-135m | a local HF causal-LM folder
    hidden_size: int = 128  # tiny-llama only
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    finetune: Finetune = "auto"  # auto (full for tiny-llama, LoRA for pretrained) | lora | full
    lora_r: int = 8
    lora_alpha: int = 16
    max_len: int = 256  # tokens per training sequence
    # dropout on the embedding and every attention/MLP output while training (ttds.llm.dropout);
    # 0 = none. SASRec's default is 0.2.
    dropout: float = 0.0
    # per-item input vectors added at the last token of every item ID in a prompt (ttds.llm.item_embedding):
    # none (the paper's model: codes only) | separate (own table) | tied (the item head's vectors, as
    # SASRec ties its input and output item embeddings; needs loss.item_head_weight > 0)
    item_embedding: ItemEmbeddingMode = "none"

    def problems(self) -> list[str]:
        return _at_least(self, ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_len"), 1) + _in_unit(
            "dropout", self.dropout)


@dataclass
class TaskMix(Section):
    """Per-epoch sampling rate of each task's rows (0 disables a task)."""

    next_item: float = 1.0
    user_pred: float = 0.3
    comment: float = 0.2
    text2id: float = 0.3
    id2text: float = 0.3
    high_order: bool = True  # False = TTDS-HO ablation: next-item only
    # Put the user's semantic ID in next-item prompts (the paper's prompt). Off by default because
    # the user tower's input X summarises the user's *training* items, which are exactly the
    # next-item training targets, so the ID leaks them: a model trained with user IDs ranks its
    # users' last training item at NDCG@10 .229 with their own ID and .033 with another user's
    # (`ttds.bench.user_id_leak`; no held-out split involved). Its effect on held-out ranking was
    # chosen on test figures in an earlier phase; to be re-decided on validation by the
    # confirmatory protocol (issue 31; docs/findings.md). The user tower still trains and its
    # IDs still serve user prediction.
    user_id_in_next_item: bool = False
    # False: prompts keep their fields (IDs, history, text) and drop the templates' words. For the
    # built-in tiny-llama, trained from scratch, the words are a fixed prefix that carries nothing
    # the token types do not already say; they were ~1/4 of a next-item row's tokens (issue 27's
    # profile). A pretrained backbone may read them: keep them there.
    instruction_words: bool = True

    def problems(self) -> list[str]:
        return _at_least(self, ("next_item", "user_pred", "comment", "text2id", "id2text"), 0)


@dataclass
class LossConfig(Section):
    """The training losses: the LLM's token cross-entropy plus the optional DM-VAE, retrieval and item-head terms."""

    dmvae: bool = True  # False = TTDS-DM ablation (no L_ID, no L_token)
    alpha: float = 0.1
    beta: float = 0.5
    id_batch: int = 32  # items per step in L_ID / L_token
    retrieval_weight: float = 0.0  # >0: joint ranking loss for the retrieval fast path (id_head + faiss), see ttds.rank.retrieval
    retrieval_temperature: float = 0.1  # softmax temperature of cos(prompt query, item X)
    retrieval_batch: int = 32  # next-item prompts per step in the retrieval loss
    # of the LLM's token cross-entropy (every task); 0 = plain cross-entropy. Not in any recipe:
    # 0.1 was compared on test figures in an earlier phase; to be re-decided on validation by
    # the confirmatory protocol (issue 31; docs/findings.md).
    label_smoothing: float = 0.0
    # >0: an item head (hidden -> one logit per item, full-catalogue cross-entropy like SASRec's) on the
    # LLM state where each next-item ID starts, trained at every item of the next-item rows; rank by it
    # with eval.rank_by=item_head (ttds.rank.item_head). 0 = none (the paper's model)
    item_head_weight: float = 0.0
    item_head_negatives: int = 0  # 0 = full softmax; >0 = sampled softmax with this many uniform negatives (large catalogues)

    def problems(self) -> list[str]:
        out = _at_least(self, ("alpha", "beta", "retrieval_weight", "item_head_weight", "item_head_negatives"), 0)
        out += _at_least(self, ("id_batch", "retrieval_batch"), 1) + _in_unit("label_smoothing", self.label_smoothing)
        if self.retrieval_temperature <= 0:
            out.append(f"retrieval_temperature={self.retrieval_temperature}: expected a value > 0")
        return out


@dataclass
class OptimConfig(Section):
    """The TTDS job's optimiser, schedule, early stopping and weight average."""

    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_epochs: int = -1  # backbone frozen for these epochs; -1 = auto (1 for pretrained, 0 for tiny-llama)
    patience: int = 3  # early stopping on validation NDCG@10
    seed: int = 0
    # >1: the examples of this many steps are pooled, sorted by length and cut again into as many
    # steps (HF's group_by_length), so a batch pads to a near length instead of its longest row;
    # the steps and their examples are the same, only which rows share a step changes. 1 = off
    length_group_steps: int = 1
    time_budget_s: float = 0.0  # stop before an epoch that would end past this much training-loop time, a resumed run's earlier time included (0 = none)
    # constant | cosine: per-epoch decay to lr * min_lr_ratio in the last of `epochs`. Cosine by
    # default: on Instruments (6 epochs) it raised TTDS's best validation NDCG@10 (1,000 users)
    # from .074 to .081, and it damps re-index churn as the towers slow (docs/findings.md). One
    # run each: to be confirmed over seeds by the confirmatory protocol (issue 31).
    lr_schedule: LrSchedule = "cosine"
    min_lr_ratio: float = 0.1
    # >0: validate, select and save an exponential moving average of the weights (this decay per
    # step; ~1/(1 - decay) steps averaged) while training steps the live ones (ttds.train.weight_average).
    # 0 = off. ZeRO stage 1/2 only.
    ema_decay: float = 0.0
    # >0: the same average, its span given in epochs of steps instead (the decay is then
    # 1 - 1/(ema_epochs x steps per epoch), from the training rows, batch size and workers).
    # Set this or ema_decay, not both.
    ema_epochs: float = 0.0

    def problems(self) -> list[str]:
        out = _at_least(self, ("epochs", "batch_size", "length_group_steps"), 1) + _at_least(self, ("patience",), 1)
        out += _at_least(self, ("warmup_epochs",), -1) + _at_least(self, ("time_budget_s", "weight_decay"), 0)
        out += _in_unit("min_lr_ratio", self.min_lr_ratio, closed=True)
        span = ema_span_problem(self.ema_decay, self.ema_epochs)
        return out + ([span] if span else [])


@dataclass
class EvalConfig(Section):
    """Validation (model selection, every epoch) and the final test evaluation."""

    beam_width: int = 20
    top_k: int = 10
    batch_size: int = 64
    valid_users: int = 1000  # users scored for per-epoch validation (0 = all)
    test_users: int = 0  # 0 = every test user (full leave-one-out evaluation)
    templates: int = 0  # next-item templates averaged at test time (0 = all, as the paper)
    workers: int = 2  # Ray actors for the final test evaluation
    # Keep each user's history items out of its ranking (validation and test), as RecBole's
    # full-sort evaluation does. Off by default (the paper's protocol ranks every item); the
    # Amazon leave-one-out sets have no repeats, so a seen item can never be the answer.
    exclude_seen: bool = False
    # beam (trie-constrained beam search over IDs, the paper's) | item_head (the item head's logits, one
    # forward; needs loss.item_head_weight > 0). Used for validation (model selection) and the test.
    rank_by: RankBy = "beam"
    # Beam search over a model with items added after training (jobs/add_items.py, --cold-items): the
    # largest share of a top k that new items sharing a result's ID prefix may take (ttds.rank.new_items;
    # TIGER's epsilon). A declared prior: validation never has a new item as its target. 0 = off.
    new_item_share: float = 0.1

    def template_ids(self) -> list[int]:
        """The next-item templates the test averages over (`templates`: 0 = all three)."""
        return list(range(3 if self.templates == 0 else self.templates))

    def problems(self) -> list[str]:
        out = []
        if not 0.0 <= self.new_item_share <= 1.0:
            out.append(f"new_item_share={self.new_item_share}: expected a share in [0, 1]")
        if self.beam_width < self.top_k:
            out.append(f"beam_width={self.beam_width} must be >= top_k={self.top_k}")
        if self.top_k < 10:
            out.append(f"top_k={self.top_k} must be >= 10 (HR@10 / NDCG@10 are reported)")
        out += _at_least(self, ("batch_size", "workers"), 1) + _at_least(self, ("valid_users", "test_users", "templates"), 0)
        return out


@dataclass
class TTDSJobConfig(Section):
    """jobs/train_ttds.py: tokenizer warm-up, the LLM recommender's training, and its test evaluation."""

    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    backbone: BackboneSection = field(default_factory=BackboneSection)
    tasks: TaskMix = field(default_factory=TaskMix)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tokenizer_dir: str = ""  # reuse a trained tokenizer (jobs/train_tokenizer.py output) instead of training one
    output_dir: str = ""  # default: runs/train_ttds/<timestamp>

    def problems(self) -> list[str]:
        return check_ttds_job(self)


# ----------------------------------------------------------------------------- baselines
@dataclass
class SeqModelConfig(Section):
    """What SASRec and GRU4Rec share: the item window, dropout and how they train (one
    definition, so a training knob reaches both; each model adds its own shape)."""

    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    max_len: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 100
    patience: int = 5  # epochs without a better valid NDCG@10 before stopping
    batch_size: int = 256
    seed: int = 0
    threads: int = 0  # torch threads per worker; 0 = leave Ray's default (OMP_NUM_THREADS)
    time_budget_s: float = 0.0  # stop before an epoch that would end past this much training time, a resumed run's earlier time included (0 = none)
    lr_schedule: LrSchedule = "constant"  # per epoch to lr * min_lr_ratio in the last of `epochs` (ttds.train.lr_schedule)
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.0  # >0: validate and keep an exponential moving average of the weights (ttds.train.weight_average)
    ema_epochs: float = 0.0  # >0: the same average over ~this many epochs of steps (sets the decay; not with ema_decay)

    def problems(self) -> list[str]:
        out = _at_least(self, ("hidden", "layers", "max_len", "epochs", "patience", "batch_size"), 1)
        out += _at_least(self, ("threads", "time_budget_s", "weight_decay"), 0) + _in_unit("dropout", self.dropout)
        out += _in_unit("min_lr_ratio", self.min_lr_ratio, closed=True)
        span = ema_span_problem(self.ema_decay, self.ema_epochs)
        return out + ([span] if span else [])


@dataclass
class SASRecConfig(SeqModelConfig):
    """SASRec (`ttds.baselines.sasrec`): full-softmax causal Transformer over the item history."""

    heads: int = 2
    inner: int = 0  # feed-forward width; 0 = hidden (the paper's point-wise FFN)

    def problems(self) -> list[str]:
        return super().problems() + _at_least(self, ("heads",), 1) + _at_least(self, ("inner",), 0)


@dataclass
class GRU4RecConfig(SeqModelConfig):
    """GRU4Rec (`ttds.baselines.gru4rec`): a GRU over the item history, trained as SASRec is."""

    layers: int = 1
    embedding: int = 64  # item embedding size (input table, tied with the output scoring); `hidden` = GRU state size

    def problems(self) -> list[str]:
        return super().problems() + _at_least(self, ("embedding",), 1)


# ----------------------------------------------------------------------------- benchmark
@dataclass
class BenchConfig(Section):
    """jobs/benchmark.py: systems trained and tested side by side on one corpus (`ttds.bench.harness`)."""

    data: str  # a prepared corpus folder, a raw LC-Rec folder, or "synthetic"
    systems: list[str]  # recipe names (configs/recipes/*.yaml), `<ttds-family>-retrieval`, `<ttds-family>@<index.kind>`
    out: str
    budget_epochs: int = 0  # max epochs of every trained system (0 = each system's default)
    budget_minutes: float = 0.0  # training-loop wall clock per system (0 = none)
    perf: bool = False
    ttds_config: str = ""  # YAML base config of every TTDS-family system
    sets: list[str] = field(default_factory=list)  # "SYSTEM:key=value" (SYSTEM: name, glob, ttds-family, baselines)
    retrieval_weight: float = 0.5  # loss.retrieval_weight of the base of a *-retrieval system
    workers: int = 0  # Ray Train workers per trained system (0 = each job's default)
    cpus_per_worker: float = 0.5
    use_gpu: bool = False  # one GPU per Ray Train worker; TTDS test ranking on the GPU too
    fresh: bool = False  # ignore results of an earlier run in `out`
    exclude_seen: bool = False  # every system keeps each user's history items out of its rankings (validation and test)
    seed: int = 0  # synthetic corpus seed (data = "synthetic")
    # training seed of every trained system (TTDS optim.seed, a baseline's seed): one flag for the runs
    # of a seed study; None = each system's own (0), and the run keys of earlier folders stay as they were
    train_seed: int | None = None
    perf_users: int = 256  # test users timed per decoding mode
    perf_batch: int = 64
    perf_rows: int = 2048  # task rows of the short training-throughput runs
    perf_repeats: int = 3
    perf_train_repeats: int = 2  # alternating 1-/2-worker throughput runs per count (best kept)
    perf_reference_items: int = 10_000  # items of the reference decoding setting (0 = skip it)
    rss_interval_s: float = 0.5
    cold_items: float = 0.0  # > 0: hold this fraction of items out of training, test them as candidates (ttds.bench.cold)
    # with cold_items: a benchmark folder of the same systems trained without cold items; each TTDS system's
    # warm-target users are compared with that system's run there (paired NDCG@10: what holding items out cost)
    cold_reference: str = ""
    seeds: int = 0  # > 0: the confirmatory protocol, every system trained with seeds 0..seeds-1 (ttds.bench.confirm)
    tune_trials: int = 0  # > 0: a Ray Tune search of this many trials per trained system on validation, frozen as a recipe
    # with seeds and exclude_seen: also score every finished (system, seed) on test with every item ranked (the
    # paper's protocol), from the same trained model (no retraining); <out>/all-items/ (ttds.bench.harness, Harness._rescore)
    also_all_items: bool = False
    # with seeds: a folder that is kept (a git checkout, a mounted bucket) where the run's ledger (recipes, test
    # records, per-user figures, test reads) is copied as it grows and restored from on a fresh machine (ttds.bench.ledger)
    ledger: str = ""

    def problems(self) -> list[str]:
        out = _at_least(self, ("budget_epochs", "budget_minutes", "workers", "perf_reference_items", "seeds", "tune_trials"), 0)
        if self.seeds and self.train_seed is not None:
            out.append("seeds and train_seed exclude each other: --seeds N trains every system with seeds 0..N-1")
        if self.also_all_items and not (self.seeds and self.exclude_seen and not self.cold_items):
            out.append("also_all_items re-scores the seeds of an --exclude-seen run with every item ranked: it needs seeds > 0 and "
                       "exclude_seen, without cold_items")
        if self.ledger and not self.seeds:
            out.append("ledger keeps a confirmatory run's decisions and test reads: it needs seeds > 0")
        if not 0.0 <= self.cold_items < 1.0:
            out.append(f"cold_items={self.cold_items}: expected a fraction in [0, 1)")
        if self.cold_reference and not self.cold_items:
            out.append("cold_reference compares a --cold-items run with a run without: it needs cold_items > 0")
        out += _at_least(self, ("perf_users", "perf_batch", "perf_rows", "perf_repeats", "perf_train_repeats"), 1)
        if self.cpus_per_worker <= 0:
            out.append(f"cpus_per_worker={self.cpus_per_worker}: expected a value > 0")
        return out


# ----------------------------------------------------------------------------- tuning
@dataclass
class TuneSettings(Section):
    """jobs/tune_ttds.py's `tune:` section: the Ray Tune search (`ttds.tune.space`)."""

    search: TuneSearch = "random"  # optuna and hyperopt need the package installed
    num_samples: int = 8  # samples of the space; grid parameters multiply this
    max_concurrent: int = 0  # 0 = as many as fit the cluster's CPUs (see sweep.auto_concurrency)
    scheduler: TuneScheduler = "asha"  # asha (stop weak trials early) | fifo (run every trial to the end)
    grace_period: int = 1  # epochs every trial gets before ASHA may stop it
    reduction_factor: float = 2.0  # ASHA keeps the top 1/reduction_factor at each rung
    trial_cpus: float = 0.25  # the trial driver's share; its Ray Train workers ask for their own
    # logical CPUs of the sweep's local Ray (0 = the machine's cores); more than the cores lets
    # trials whose workers use one torch thread each run side by side (Ray Data's whole-CPU read
    # tasks otherwise leave room for one trial on a 2-core box). Ignored when joining a cluster.
    ray_cpus: int = 0
    seed: int = 0  # searcher seed, so a sweep's sampled configs can be repeated
    output_dir: str = ""  # default: runs/tune_ttds/<timestamp>

    def problems(self) -> list[str]:
        out = _at_least(self, ("num_samples", "grace_period"), 1) + _at_least(self, ("max_concurrent", "ray_cpus"), 0)
        if self.reduction_factor <= 1:
            out.append(f"reduction_factor={self.reduction_factor}: expected a value > 1")
        if self.trial_cpus <= 0:
            out.append(f"trial_cpus={self.trial_cpus}: expected a value > 0")
        return out


# ----------------------------------------------------------------------------- serving
@dataclass(frozen=True)
class RecommenderConfig(Section):
    """Serving knobs (not model facts: those come from the model folder).

    `max_request_history` bounds what a client may send; the prompt itself keeps the last
    `max_history` items the model was trained with (its ttds.json). `max_beam_width` caps the
    search a request can ask for (its k, or k + seen items for the retrieval path's widened
    search), so one request cannot ask for an unbounded search. Beam search keeps seen items out
    by masking them in the search itself, as the evaluation does.
    """

    beam_width: int = 20
    max_beam_width: int = 128
    template: int = 0
    max_k: int = 100
    max_request_history: int = 200
    max_text_chars: int = 2000
    batch_size: int = 16
    device: Device = "auto"
    num_threads: int = 0  # >0: torch.set_num_threads (a replica with a fractional CPU wants 1)
    corpus_dir: str = ""  # "" = the corpus named in the model's ttds.json
    new_item_share: float = 0.1  # beam search: top-k share open to items added after training (eval.new_item_share)

    def problems(self) -> list[str]:
        out = _at_least(self, ("beam_width", "max_beam_width", "max_k", "max_request_history", "max_text_chars", "batch_size"), 1)
        if not 0.0 <= self.new_item_share <= 1.0:
            out.append(f"new_item_share={self.new_item_share}: expected a share in [0, 1]")
        out += _at_least(self, ("template", "num_threads"), 0)
        if self.beam_width > self.max_beam_width:
            out.append(f"beam_width={self.beam_width} must be <= max_beam_width={self.max_beam_width}")
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> "RecommenderConfig":
        """From a Serve `user_config` mapping (unknown options refused by name)."""
        return from_dict(cls, dict(d or {}))


@dataclass(frozen=True)
class AdmissionConfig(Section):
    """Time-bounded admission at the HTTP ingress (`ttds.serve.admission`; the Serve app's
    `user_config.admission`). `max_in_flight`: requests running downstream at once (per ingress
    replica); keep it at or below the ranking deployment's total `max_ongoing_requests` so status
    calls and batches are never queued behind it. `max_queue`: hard cap of waiting requests.
    `deadline_s`: the longest a request may wait to start. `retry_after_s`: the smallest
    Retry-After a refusal carries; it grows with the backlog (the time until the queue and the
    clients refused before have drained) up to `max_retry_after_s`."""

    max_in_flight: int = 24
    max_queue: int = 256
    deadline_s: float = 2.0
    retry_after_s: int = 1
    max_retry_after_s: int = 30

    def problems(self) -> list[str]:
        out = _at_least(self, ("max_in_flight",), 1) + _at_least(self, ("max_queue", "retry_after_s"), 0)
        if self.deadline_s <= 0:
            out.append(f"deadline_s={self.deadline_s}: expected a value > 0")
        if self.max_retry_after_s < self.retry_after_s:
            out.append(f"max_retry_after_s={self.max_retry_after_s}: expected >= retry_after_s ({self.retry_after_s})")
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> "AdmissionConfig":
        """From the Serve `user_config`'s `admission` mapping (unknown options refused by name)."""
        return from_dict(cls, dict(d or {}))
