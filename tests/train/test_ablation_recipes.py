"""Every named recipe (`--ablation NAME`, the benchmark's TTDS-family systems) is a valid config.

Why: a recipe is a list of command-line overrides; a misspelt key or a value the job refuses
would only show when someone runs that system, possibly an hour into a benchmark."""

import pytest

from ttds.config import load_config
from ttds.configs import ABLATIONS, TTDSJobConfig
from ttds.train.ttds_job import check_config


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_recipe_parses_and_passes_the_job_checks(name):
    cfg = load_config(TTDSJobConfig, None, list(ABLATIONS[name]))
    check_config(cfg)


def test_item_head_recipe_validates_on_every_user_at_a_constant_rate():
    """ttds-ihe trains as SASRec does (README, "Item input vectors"): constant lr 1e-3, patience 5,
    selected on every validation user (cheap with the item head: one forward per user)."""
    cfg = load_config(TTDSJobConfig, None, list(ABLATIONS["ttds-ihe"]))
    assert (cfg.optim.lr, cfg.optim.lr_schedule, cfg.optim.patience, cfg.eval.valid_users) == (1e-3, "constant", 5, 0)
    assert cfg.backbone.item_embedding == "tied" and cfg.eval.rank_by == "item_head"
    # the explicit flags a user adds after the recipe win (jobs/train_ttds.py puts the recipe first)
    assert load_config(TTDSJobConfig, None, list(ABLATIONS["ttds-ihe"]) + ["--optim.lr=5e-4"]).optim.lr == 5e-4


def test_a_broken_recipe_is_caught():
    with pytest.raises(ValueError, match="item_embedding"):
        check_config(load_config(TTDSJobConfig, None, ["--backbone.item_embedding=tied"]))
    with pytest.raises(Exception):
        load_config(TTDSJobConfig, None, ["--optim.no_such_key=1"])
