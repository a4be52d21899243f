"""The semantic token generator: learned towers (RQ, K-way, MoC), ablation indexers and the ID table.

Every indexer maps feature rows to M codes (`base.Indexer`); `collisions` turns codes into
unique prefix-free IDs with a suffix token; `table.SemanticIDTable` names them as LLM tokens
and is what training and serving share.
"""

from ttds.index.base import Indexer, check_codes
from ttds.index.collisions import assign_suffixes, collision_rate, final_keys, is_prefix_free, max_suffix
from ttds.index.kinds import INDEX_KINDS, LEARNED_KINDS, STATIC_KINDS, build_tower, tower_config_from_dict
from ttds.index.kway import KWayConfig, KWayTokenizer, ParallelQuantizer, tokenize_unseen_users
from ttds.index.lsh import LSHIndexer
from ttds.index.moc import MoCConfig, MoCTokenizer
from ttds.index.precomputed import (
    parse_lcrec_tokens,
    table_from_arrow,
    table_from_index_json,
    table_from_precomputed,
)
from ttds.index.random_ids import RandomIndexer
from ttds.index.rq import (
    RQConfig,
    RQOutput,
    RQTokenizer,
    ResidualQuantizer,
    codebook_report,
    kmeans,
    reconstruction_error,
)
from ttds.index.table import ITEM_PREFIXES, USER_PREFIXES, SemanticIDTable, level_token, suffix_token
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer

__all__ = [
    "Indexer",
    "check_codes",
    "assign_suffixes",
    "collision_rate",
    "final_keys",
    "is_prefix_free",
    "max_suffix",
    "LSHIndexer",
    "INDEX_KINDS",
    "LEARNED_KINDS",
    "STATIC_KINDS",
    "build_tower",
    "tower_config_from_dict",
    "KWayConfig",
    "KWayTokenizer",
    "ParallelQuantizer",
    "tokenize_unseen_users",
    "MoCConfig",
    "MoCTokenizer",
    "RandomIndexer",
    "parse_lcrec_tokens",
    "table_from_arrow",
    "table_from_index_json",
    "table_from_precomputed",
    "RQConfig",
    "RQOutput",
    "RQTokenizer",
    "ResidualQuantizer",
    "codebook_report",
    "kmeans",
    "reconstruction_error",
    "ITEM_PREFIXES",
    "USER_PREFIXES",
    "SemanticIDTable",
    "level_token",
    "suffix_token",
    "TwinTowerConfig",
    "TwinTowerTokenizer",
]
