"""Every recipe file (`--ablation NAME`, the benchmark's systems) is a valid config.

Why: a recipe is a YAML file a user may add or edit; a misspelt key or a value the job refuses
would only show when someone runs that system, possibly an hour into a benchmark."""

import pytest

from ttds.config import ConfigError, TTDSJobConfig, check_config, list_recipes, load_config, load_recipe, recipe_names

PAPER_AND_PLATFORM = {"ttds", "stds", "ttss", "ttds-dm", "ttds-ho", "ttds-uid", "m3", "m5", "tiger", "ttds-ih", "ttds-ihe"}


def test_every_ablation_and_baseline_has_a_recipe_file():
    names = set(recipe_names())
    assert PAPER_AND_PLATFORM | {"popularity", "sasrec", "gru4rec"} <= names
    assert set(recipe_names("ttds")) >= PAPER_AND_PLATFORM


@pytest.mark.parametrize("name", sorted(PAPER_AND_PLATFORM))
def test_recipe_parses_and_passes_the_job_checks(name):
    check_config(load_recipe(name).ttds_config())


def test_item_head_recipe_validates_on_every_user_at_a_constant_rate():
    """ttds-ihe trains as SASRec does: constant lr 1e-3, patience 5, selected on every
    validation user (cheap with the item head: one forward per user)."""
    cfg = load_recipe("ttds-ihe").ttds_config()
    assert (cfg.optim.lr, cfg.optim.lr_schedule, cfg.optim.patience, cfg.eval.valid_users) == (1e-3, "constant", 5, 0)
    assert cfg.backbone.item_embedding == "tied" and cfg.eval.rank_by == "item_head"
    # the explicit flags a user adds after the recipe win
    assert load_recipe("ttds-ihe").ttds_config(["--optim.lr=5e-4"]).optim.lr == 5e-4


def test_tiger_is_static_without_users_dmvae_or_high_order_tasks():
    cfg = load_recipe("tiger").ttds_config()
    assert not (cfg.index.dynamic or cfg.index.user_tower or cfg.loss.dmvae or cfg.tasks.high_order)


def test_the_recipe_sits_between_the_config_file_and_the_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("optim: {lr: 0.5, epochs: 3}\n")
    cfg = load_recipe("ttds-ihe").ttds_config(["--optim.patience=7"], base)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.patience) == (1e-3, 3, 7)  # recipe > file, CLI > recipe


def test_a_broken_recipe_is_caught(tmp_path):
    with pytest.raises(ValueError, match="item_embedding"):
        check_config(load_config(TTDSJobConfig, None, ["--backbone.item_embedding=tied"]))
    with pytest.raises(ConfigError, match="no_such_key"):
        load_config(TTDSJobConfig, None, ["--optim.no_such_key=1"])
    (tmp_path / "bad.yaml").write_text("kind: ttds\nconfig:\n  optim: {lr_schedule: linear}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lr_schedule='linear'"):
        load_recipe("bad", tmp_path)
    (tmp_path / "typo.yaml").write_text("kind: ttds\nconfg: {}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_recipe("typo", tmp_path)
    with pytest.raises(ConfigError):  # listing the folder reads every file: a broken one is named
        list_recipes(tmp_path)
