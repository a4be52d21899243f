"""The loader: YAML + `--section.key=value` into the schema's dataclasses, every problem named.

Why: a config typo must fail in the first second with the key's dotted name, not an hour into
a run; and what a run saved must load back to the same config."""

import pytest
import yaml

from ttds.config import (
    CONFIG_VERSION,
    VERSION_KEY,
    BenchConfig,
    ConfigError,
    RecommenderConfig,
    TTDSJobConfig,
    describe_fields,
    from_dict,
    job_argparser,
    load_config,
    parse_job_args,
    save_config,
)


def test_defaults_file_and_overrides_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.01, epochs: 3}\nindex: {levels: 3}\n")
    cfg = load_config(TTDSJobConfig, path, ["--optim.lr=5e-4"], layers=[{"optim": {"epochs": 4, "patience": 9}}])
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.patience, cfg.index.levels) == (5e-4, 4, 9, 3)
    assert cfg.optim.batch_size == TTDSJobConfig().optim.batch_size


def test_unknown_keys_are_refused_by_dotted_name(tmp_path):
    with pytest.raises(ConfigError, match=r"optim.lrr"):
        load_config(TTDSJobConfig, None, ["--optim.lrr=1"])
    path = tmp_path / "c.yaml"
    path.write_text("index: {features: {collaborative: {dims: 3}}}\n")
    with pytest.raises(ConfigError, match=r"index.features.collaborative.dims"):
        load_config(TTDSJobConfig, path)
    with pytest.raises(ConfigError, match="is not a config section"):
        load_config(TTDSJobConfig, None, ["--output_dir.x=1"])


def test_literal_values_are_parsed_and_checked():
    cfg = load_config(TTDSJobConfig, None, ["--train.zero_stage=3", "--index.reencode_text=true", "--index.kind=moc"])
    assert cfg.train.zero_stage == 3 and cfg.index.reencode_text == "true" and cfg.index.kind == "moc"
    # a YAML boolean matches the "true"/"false" strings a Literal allows
    assert from_dict(TTDSJobConfig, {"index": {"reencode_text": False}}).index.reencode_text == "false"
    with pytest.raises(ConfigError, match=r"train.zero_stage='4': expected one of 0, 1, 2, 3"):
        load_config(TTDSJobConfig, None, ["--train.zero_stage=4"])
    with pytest.raises(ConfigError, match=r"eval.rank_by='lists': expected one of beam, item_head"):
        load_config(TTDSJobConfig, None, ["--eval.rank_by=lists"])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(TTDSJobConfig, None, ["--index.kind=pq", "--optim.epochs=0", "--backbone.dropout=2", "--data.max_history=abc"])
    text = str(err.value)
    for part in ("index.kind='pq'", "optim.epochs=0", "backbone.dropout=2.0", "data.max_history: expected int"):
        assert part in text, (part, text)
    assert len(err.value.problems) == 4


def test_a_section_checks_itself_when_built_in_code():
    from ttds.config import EvalConfig, IndexConfig, OptimConfig

    with pytest.raises(ConfigError, match="kind='pq'"):
        IndexConfig(kind="pq")
    with pytest.raises(ConfigError, match="beam_width=5 must be >= top_k=10"):
        EvalConfig(beam_width=5)
    with pytest.raises(ConfigError, match="ema_decay=1.5"):
        OptimConfig(ema_decay=1.5)
    with pytest.raises(ConfigError, match="set ema_decay or ema_epochs, not both"):
        TTDSJobConfig(optim=OptimConfig(ema_decay=0.9, ema_epochs=1.0))
    with pytest.raises(ConfigError, match="needs loss.item_head_weight > 0"):
        TTDSJobConfig(eval=EvalConfig(rank_by="item_head"))


def test_saved_config_carries_its_version_and_loads_back(tmp_path):
    cfg = load_config(TTDSJobConfig, None, ["--optim.lr=3e-4", "--index.hidden_dims=[64,32]"])
    save_config(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data[VERSION_KEY] == CONFIG_VERSION
    assert load_config(TTDSJobConfig, tmp_path / "config.yaml") == cfg


def test_required_keys_and_serving_options():
    with pytest.raises(ConfigError, match="missing config key"):
        from_dict(BenchConfig, {"data": "synthetic"})
    assert from_dict(BenchConfig, {"data": "synthetic", "systems": ["ttds"], "out": "/tmp/x"}).budget_epochs == 0
    assert RecommenderConfig.from_dict({"beam_width": "10", "device": "cpu"}).beam_width == 10
    with pytest.raises(ValueError, match="max_beams"):
        RecommenderConfig.from_dict({"max_beams": 3})
    with pytest.raises(ValueError, match="device='tpu'"):
        RecommenderConfig.from_dict({"device": "tpu"})


def test_job_cli_shape(capsys):
    parser = job_argparser("test job", describe_fields(TTDSJobConfig))
    _, cfg = parse_job_args(parser, TTDSJobConfig, ["--optim.lr=0.5"])
    assert cfg.optim.lr == 0.5
    with pytest.raises(SystemExit):
        parse_job_args(job_argparser("x"), TTDSJobConfig, ["--optim.nope=1"])
    assert "optim.nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        parse_job_args(job_argparser("x"), TTDSJobConfig, ["--print-config"])
    assert ex.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)[VERSION_KEY] == CONFIG_VERSION
    assert "--index.features.lightgcn.layers=3" in describe_fields(TTDSJobConfig)
