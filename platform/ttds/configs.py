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

    kind: str = "rq"  # rq | lsh | random | precomputed (the corpus's shipped X.index.json)
    levels: int = 4
    codebook_size: int = 256
    code_dim: int = 256
    hidden_dims: list[int] = field(default_factory=lambda: [512])
    commitment: float = 0.25
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

    def towers(self, item_dim: int, user_dim: int | None) -> dict:
        def tower(dim: int, levels: int) -> dict:
            return {
                "input_dim": dim, "code_dim": self.code_dim, "levels": levels, "codebook_size": self.codebook_size,
                "hidden_dims": tuple(self.hidden_dims), "commitment": self.commitment, "seed": self.seed,
            }

        return {
            "item": tower(item_dim, self.levels),
            "user": tower(user_dim, self.user_levels) if (self.user_tower and user_dim) else None,
        }


@dataclass
class TokenizerJobConfig:
    data: DataConfig = field(default_factory=DataConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = ""  # default: runs/train_tokenizer/<timestamp>
