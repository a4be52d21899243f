"""jobs/train_ttds.py --profile: the stage timers, the token counts and the table."""

import torch

from ttds.llm.model import TTDSModel
from ttds.train.profile import OFF, StageTimer, count_tokens, profile_table


def test_off_costs_one_shared_context_and_counts_nothing():
    assert OFF.section("a") is OFF.section("b")
    count_tokens(OFF, ["next_item"], [3], [[1, 2, 3]], 5)  # no error, nothing kept
    assert not OFF.enabled


def test_table_scales_a_bounded_profile_to_the_epoch():
    t = StageTimer()
    for _ in range(10):  # 10 timed steps of an epoch of 100
        t.add("step", 0.0)
        t.add("forward", 0.2)
        t.add("backward", 0.3)
        t.add("optimizer_step", 0.1)
        t.add("step_total", 0.7)
    t.add("validate", 5.0)
    count_tokens(t, ["next_item", "user_pred"], [30, 10], [[-100] * 10 + [1] * 20, [-100] * 5 + [1] * 5], 30)
    table = profile_table({"seconds": dict(t.seconds), "calls": dict(t.calls), "counts": {**t.counts, "epochs": 1}, "corpus": "c", "batch_size": 32,
                           "world": 1, "threads": 1, "epoch_steps": 100, "epochs_profiled": 1, "valid_users": 7, "rank_by": "item_head"}, "r")
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert float(rows["forward (engine, whole)"].split("|")[2]) == 20.0  # 0.2 s x 100 steps
    assert float(rows["validation"].split("|")[2]) == 5.0  # once per epoch: not scaled
    assert "bounded" in table
    assert rows["user_pred"].split("|")[3].strip() == "10.0" and rows["user_pred"].split("|")[5].strip() == "67%"  # 10 real of 30 padded


def test_model_forward_sections_are_timed_only_when_a_profiler_is_set():
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=4, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16))

    class NoTowers(torch.nn.Module):
        user = None

    m = TTDSModel(tiny, NoTowers(), 8, 4)
    ids = torch.ones(2, 3, dtype=torch.long)
    m(ids, ids, ids)
    m.profiler = t = StageTimer()
    m(ids, ids, ids)
    assert t.calls["fwd/backbone"] == 1 and t.calls["fwd/lm_loss"] == 1
