"""ttds's configuration: the schema of every section, the loader, migration of older files, recipes.

- `schema`: every config section as a dataclass (`Literal` types for allowed values, each
  section checking itself as it is built);
- `checks`: the checks across sections of a job config;
- `loader`: YAML files + `--section.key=value` into those dataclasses, unknown keys refused;
- `migrate`: the config version written into every saved config, and the step that fills
  fields added since into an older file;
- `recipes`: named configs as files (`configs/recipes/*.yaml`);
- `reference`: docs/configuration.md, generated from the schema.

The bottom layer of the package: it imports nothing from the rest of ttds.
"""

from ttds.config.checks import check_config, check_ttds_job
from ttds.config.loader import (
    ConfigError,
    apply_overrides,
    describe_fields,
    from_dict,
    job_argparser,
    load_config,
    load_saved,
    parse_job_args,
    read_yaml,
    save_config,
    to_dict,
)
from ttds.config.migrate import CONFIG_VERSION, VERSION_KEY, earlier_behaviour, migrate, migrate_model_meta
from ttds.config.recipes import SEQ_MODELS, Recipe, list_recipes, load_recipe, recipe_names, recipes_dir, recipes_help
from ttds.config.schema import (
    BackboneSection,
    BenchConfig,
    CollaborativeConfig,
    DataConfig,
    EvalConfig,
    FeatureConfig,
    FeatureSource,
    GRU4RecConfig,
    IndexConfig,
    IndexKind,
    ItemEmbeddingMode,
    LightGCNConfig,
    LossConfig,
    LrSchedule,
    OptimConfig,
    RankBy,
    AdmissionConfig,
    RecommenderConfig,
    ReindexRule,
    SASRecConfig,
    SeqModelConfig,
    Section,
    TaskMix,
    TokenizerJobConfig,
    TrainConfig,
    TTDSJobConfig,
    TuneSettings,
    allowed,
)

__all__ = [
    "AdmissionConfig",
    "CONFIG_VERSION", "SEQ_MODELS", "VERSION_KEY", "BackboneSection", "BenchConfig", "CollaborativeConfig", "ConfigError",
    "DataConfig", "EvalConfig", "FeatureConfig", "FeatureSource", "GRU4RecConfig", "IndexConfig", "IndexKind",
    "ItemEmbeddingMode", "LightGCNConfig", "LossConfig", "LrSchedule", "OptimConfig", "RankBy", "Recipe",
    "RecommenderConfig", "ReindexRule", "SASRecConfig", "SeqModelConfig", "Section", "TTDSJobConfig", "TaskMix", "TokenizerJobConfig",
    "TrainConfig", "TuneSettings", "allowed", "apply_overrides", "check_config", "check_ttds_job", "describe_fields", "earlier_behaviour",
    "from_dict", "job_argparser", "list_recipes", "load_config", "load_recipe", "load_saved", "migrate",
    "migrate_model_meta", "parse_job_args", "read_yaml", "recipe_names", "recipes_dir", "recipes_help", "save_config",
    "to_dict",
]
