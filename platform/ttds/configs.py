"""The job configs: one dataclass per job, built from shared sections.

Load with `ttds.config.load_config(Cls, yaml_path, ["--section.key=value", ...])`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ttds.features.build import FeatureConfig
from ttds.train.launch import TrainConfig


@dataclass
class DataConfig:
    corpus: str = "synthetic"  # "synthetic", a prepared corpus folder, or a raw LC-Rec folder
    seed: int = 0  # seed of the synthetic corpus
    max_history: int = 20  # items of history in a prompt


@dataclass
class IndexConfig:
    """The semantic token generator (TTDS defaults: M=4 levels, N=256 codes, code dim 256)."""

    kind: str = "rq"  # rq | kway_masked (TokenRec) | moc (Mixture-of-Codes) | lsh | random | precomputed (the corpus's shipped X.index.json)
    mask_ratio: float = 0.2  # kway_masked: share of input features each sub-encoder loses in training
    kway_combine: str = "sum"  # kway_masked: decoder input from the K code vectors: sum | concat
    moc_codebooks: int = 0  # moc: parallel codebooks for items (the scaling factor); 0 = levels
    levels: int = 4
    codebook_size: int = 256
    code_dim: int = 256
    hidden_dims: list[int] = field(default_factory=lambda: [512])
    commitment: float = 0.25
    last_level: str = "balanced"  # rq: balanced = entities sharing M-1 codes get distinct last codes (LC-Rec's uniform mapping) | nearest
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
    reindex_rule: str = "fresh"  # fresh = the towers' codes as they are | sticky_last = keep the last code while the first M-1 hold (less churn)
    max_suffix_tokens: int = 16  # collision suffix tokens reserved in the LLM vocabulary
    reencode_text: str = "auto"  # re-encode text X with the current backbone at re-index: auto (pretrained backbones only) | true | false
    joint_lr_scale: float = 0.1  # tower learning rate relative to the LLM's during joint training (limits ID churn)

    def towers(self, item_dim: int, user_dim: int | None) -> dict:
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
class TokenizerJobConfig:
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = ""  # default: runs/train_tokenizer/<timestamp>


@dataclass
class BackboneSection:
    name: str = "tiny-llama"  # tiny-llama | smollm2-135m | a local HF causal-LM folder
    hidden_size: int = 128  # tiny-llama only
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    finetune: str = "auto"  # auto (full for tiny-llama, LoRA for pretrained) | lora | full
    lora_r: int = 8
    lora_alpha: int = 16
    max_len: int = 256  # tokens per training sequence
    # dropout on the embedding and every attention/MLP output while training (ttds.llm.dropout);
    # 0 = none, as before. SASRec's default is 0.2.
    dropout: float = 0.0
    # per-item input vectors added at the last token of every item ID in a prompt (ttds.llm.item_embedding):
    # none (the paper's model: codes only) | separate (own table) | tied (the item head's vectors, as
    # SASRec ties its input and output item embeddings; needs loss.item_head_weight > 0)
    item_embedding: str = "none"


@dataclass
class TaskMix:
    """Per-epoch sampling rate of each task's rows (0 disables a task)."""

    next_item: float = 1.0
    user_pred: float = 0.3
    comment: float = 0.2
    text2id: float = 0.3
    id2text: float = 0.3
    high_order: bool = True  # False = TTDS-HO ablation: next-item only
    # Put the user's semantic ID in next-item prompts (the paper's prompt). Off by default: the
    # user tower's input X summarises the user's *training* items, which are exactly the
    # next-item training targets, so the ID leaks them. Measured on Instruments: with its own ID
    # a trained model ranks its users' last training item at NDCG@10 .229, with another user's
    # ID .033; leaving the ID out raised TTDS's test NDCG@10 from .054 to .064 (same tokenizer,
    # constant lr). The user tower still trains and its IDs still serve user prediction.
    user_id_in_next_item: bool = False


@dataclass
class LossConfig:
    dmvae: bool = True  # False = TTDS-DM ablation (no L_ID, no L_token)
    alpha: float = 0.1
    beta: float = 0.5
    id_batch: int = 32  # items per step in L_ID / L_token
    retrieval_weight: float = 0.0  # >0: joint ranking loss for the retrieval fast path (id_head + faiss), see ttds.decode.retrieval
    retrieval_temperature: float = 0.1  # softmax temperature of cos(prompt query, item X)
    retrieval_batch: int = 32  # next-item prompts per step in the retrieval loss
    label_smoothing: float = 0.0  # of the LLM's token cross-entropy (every task); 0 = plain cross-entropy
    # >0: an item head (hidden -> one logit per item, full-catalogue cross-entropy like SASRec's) on the
    # LLM state where each next-item ID starts, trained at every item of the next-item rows; rank by it
    # with eval.rank_by=item_head (ttds.decode.item_head). 0 = none (the paper's model)
    item_head_weight: float = 0.0
    item_head_negatives: int = 0  # 0 = full softmax; >0 = sampled softmax with this many uniform negatives (large catalogues)


@dataclass
class OptimConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_epochs: int = -1  # backbone frozen for these epochs; -1 = auto (1 for pretrained, 0 for tiny-llama)
    patience: int = 3  # early stopping on validation NDCG@10
    seed: int = 0
    time_budget_s: float = 0.0  # stop before an epoch that would end past this much training-loop time (0 = none)
    # constant | cosine: per-epoch decay to lr * min_lr_ratio in the last of `epochs`. Cosine by
    # default: on Instruments (6 epochs) it raised TTDS's test NDCG@10 from .064 to .069 and
    # its best validation from .074 to .081, and it also damps re-index churn as the towers slow.
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    # >0: validate, select and save an exponential moving average of the weights (this decay per
    # step; ~1/(1 - decay) steps averaged) while training steps the live ones (ttds.train.weight_average).
    # 0 = off. ZeRO stage 1/2 only.
    ema_decay: float = 0.0
    # >0: the same average, its span given in epochs of steps instead (the decay is then
    # 1 - 1/(ema_epochs x steps per epoch), from the training rows, batch size and workers).
    # Set this or ema_decay, not both.
    ema_epochs: float = 0.0


@dataclass
class EvalConfig:
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
    rank_by: str = "beam"


@dataclass
class TTDSJobConfig:
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


# One config per ablation of the paper (apply with --ablation NAME or in YAML).
ABLATIONS: dict[str, list[str]] = {
    "ttds": [],
    "stds": ["--index.user_tower=false"],  # single tower: no user IDs
    "ttss": ["--index.dynamic=false"],  # static semantic index
    "ttds-dm": ["--loss.dmvae=false"],  # no DM-VAE alignment
    "ttds-ho": ["--tasks.high_order=false"],  # no high-order tasks
    "ttds-uid": ["--tasks.user_id_in_next_item=true"],  # the paper's prompt: user ID in next-item prompts
    "m3": ["--index.levels=3"],
    "m5": ["--index.levels=5"],
    "tiger": ["--index.dynamic=false", "--index.user_tower=false", "--loss.dmvae=false", "--tasks.high_order=false"],
    # not in the paper: TTDS with an item head trained beside the ID tokens, selected and ranked by it;
    # with SASRec's dropout, which the head needs (it overfits without: README, "Is it the decoding or the model?")
    "ttds-ih": ["--loss.item_head_weight=1.0", "--eval.rank_by=item_head", "--backbone.dropout=0.2"],
    # ttds-ih whose item head's vectors are also added to each item ID in the prompt (SASRec's tied
    # input/output item embeddings, beside the codes: ttds.llm.item_embedding), trained as SASRec is:
    # constant lr 1e-3, patience 5, selected on every validation user (one forward each with the head).
    # That regime beat cosine at 2e-3 on both sets (README, "Trained as SASRec is trained").
    "ttds-ihe": ["--loss.item_head_weight=1.0", "--eval.rank_by=item_head", "--backbone.dropout=0.2", "--backbone.item_embedding=tied",
                 "--optim.lr=1e-3", "--optim.lr_schedule=constant", "--optim.patience=5", "--eval.valid_users=0"],
}
