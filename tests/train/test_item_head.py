"""The item head: where it reads the LLM, what it trains on, how it ranks (alone and through Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttds.llm.model import item_head_loss


class _Items:
    """A token table stand-in: item i -> [100 + 2i, 101 + 2i] (two ID tokens)."""

    def get(self, i: int) -> list[int]:
        return [100 + 2 * i, 101 + 2 * i]


def _builder(max_len: int):
    from ttds.llm.prompts import PromptBuilder

    b = PromptBuilder.__new__(PromptBuilder)
    b.bos, b.items, b.users, b.max_len, b.next_item_user_id = [1], _Items(), None, max_len, False
    b.templates = {"next_item": [[[5, 6, 7]]]}
    return b


@pytest.mark.parametrize("max_len", [100, 13, 9])
def test_spans_point_at_the_token_before_each_item(max_len):
    b = _builder(max_len)
    items = [3, 0, 7, 2]
    ids, labels, spans = b.next_item_spans(0, items, 0)
    assert (ids, labels) == b.next_item(0, items, 0) and len(ids) <= max_len
    # every span: the next token is the item's first ID token, the one after it the second
    for q, i in spans:
        assert ids[q + 1 : q + 3] == _Items().get(i), (q, i, ids)
    # the clip keeps the most recent items: the spans are the last items, in order
    assert [i for _, i in spans] == items[len(items) - len(spans) :]
    if max_len == 100:
        assert len(spans) == 4 and spans[0][0] == 3  # BOS + the 3 prompt tokens: the first item starts at 4
    if max_len == 9:  # BOS + 8 kept tokens: exactly the last 4 items' 8 tokens; the first's query is BOS
        assert len(spans) == 4 and spans[0][0] == 0


def test_item_head_loss_reads_the_given_states():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    head = torch.nn.Linear(8, 6, bias=False)
    pos = torch.tensor([[0, 1], [1, 4], [1, 2]])
    tgt = torch.tensor([3, 0, 5])
    want = torch.nn.functional.cross_entropy(head(torch.stack([hidden[0, 1], hidden[1, 4], hidden[1, 2]])), tgt)
    assert torch.allclose(item_head_loss(hidden, head, pos, tgt), want)


def test_left_padded_positions():
    from ttds.train.ttds_worker import item_head_kwargs

    # row 0 has 5 tokens, row 1 has 3; padded to 5 on the left, row 1's position 0 becomes 2
    kw = item_head_kwargs([(0, 4, 7), (1, 0, 2)], [5, 3], 5)
    assert kw["item_positions"].tolist() == [[0, 4], [1, 2]] and kw["item_targets"].tolist() == [7, 2]


@pytest.mark.slow
def test_item_head_trains_ranks_and_evaluates_through_ray(ray_session, synthetic_corpus, tiny_tokenizer, tmp_path):
    """Trained jointly (Ray Train + DeepSpeed), selected and tested by the item head, with the
    head's vectors tied to per-item input vectors (backbone.item_embedding=tied); beats
    popularity; the Ray Data actors rank exactly as the in-process ranker; seen items stay out.
    The IDs come from the session's tokenizer (tests/conftest.py): the warm-up is not under test."""
    from test_train_ttds_e2e import tiny_config

    from ttds.data.corpus import Corpus
    from ttds.rank import next_item_prompts, rank_item_head
    from ttds.eval.distributed import evaluate_model_dir
    from ttds.eval.per_user import per_user_table, read_per_user
    from ttds.llm.model_io import load_model, prompt_builder
    from ttds.train.ttds_job import train_ttds

    out = tmp_path / "run"
    tok = tiny_tokenizer(tiny_config(synthetic_corpus, out, epochs=2).index)
    m = train_ttds(tiny_config(synthetic_corpus, out, epochs=2, extra=[
        "--loss.item_head_weight=1.0", "--eval.rank_by=item_head", "--eval.exclude_seen=true", "--backbone.item_embedding=tied",
        f"--tokenizer_dir={tok}"]))
    ttds, pop = m["test"]["NDCG@10"], m["popularity_test"]["NDCG@10"]
    assert m["test"]["rank_by"] == "item_head"
    assert ttds > 2 * pop and ttds - pop > 0.05, (ttds, pop)
    assert all(h["item_head_loss"] > 0 for h in m["history"])
    assert m["history"][-1]["item_head_loss"] < m["history"][0]["item_head_loss"]
    meta = json.loads((out / "model" / "ttds.json").read_text())
    assert meta["rank_by"] == "item_head" and (out / "model" / "item_head.safetensors").exists()

    corpus = Corpus.open(synthetic_corpus)
    uids, hists, targets = corpus.eval_arrays("test")
    lm = load_model(out / "model")
    assert lm.model.item_head.weight.shape[0] == corpus.n_items
    assert lm.model.item_embedding is not None and lm.model.item_embedding.table is lm.model.item_head.weight
    builder = prompt_builder(lm)
    local = rank_item_head(lm.model.backbone, lm.model.item_head, next_item_prompts(builder, uids, hists, 0, int(meta["max_history"])), 10,
                           pad_id=builder.pad_id, seen=hists).items
    assert all(not set(row) & set(h.tolist()) for row, h in zip(local, hists)) and (local >= 0).all()
    want = per_user_table(uids, targets, [local])
    got = read_per_user(out)  # written by the job's Ray Data evaluation, template 0 only (eval.templates=1)
    got = got.set_index("user_id").loc[want["user_id"]]
    assert np.allclose(got["NDCG@10"].to_numpy(), want["NDCG@10"].to_numpy(), atol=1e-6)

    # serving's retrieval mode ranks by the item head: the same lists as the evaluation
    from ttds.serve.recommender import Query, Recommender

    rec = Recommender.load(out / "model")
    for row in range(3):
        state = rec.resolve(Query(user_id=int(uids[row]), k=10, mode="retrieval", exclude_seen=True))
        served = rec.retrieve([state])[0]
        assert [i for i, _ in served.items] == local[row].tolist() and served.mode == "retrieval"

    # the same model ranked by beam search still works (both rankers come with the model)
    beam = evaluate_model_dir(str(out / "model"), corpus, "test", [0], 10, 10, 100, 1, 64, exclude_seen=True)
    assert beam["rank_by"] == "beam" and beam["users"] == 100


def test_rank_by_is_checked_before_work(synthetic_corpus, tmp_path):
    from test_train_ttds_e2e import tiny_config

    from ttds.eval.distributed import check_rank_by
    from ttds.config import check_config

    with pytest.raises(ValueError, match="needs loss.item_head_weight > 0"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--eval.rank_by=item_head"]))
    with pytest.raises(ValueError, match="eval.rank_by='lists'"):
        check_config(tiny_config(synthetic_corpus, tmp_path, 1, ["--eval.rank_by=lists"]))
    with pytest.raises(ValueError, match="has no item head"):
        check_rank_by("item_head", tmp_path)


def test_a_batch_without_next_item_rows_still_gives_the_head_a_gradient():
    """Data-parallel ranks must reduce the same gradients: the head gets a (zero) one on every step."""
    from ttds.llm.model import TTDSModel

    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_hidden_layers=1,
                                        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=16))
    model = TTDSModel(tiny, torch.nn.Module(), 4, 3, n_items=6)
    ids = torch.tensor([[1, 2, 3]])
    mask = torch.ones_like(ids)
    out = model(ids, mask, ids, item_positions=torch.zeros(0, 2, dtype=torch.long), item_targets=torch.zeros(0, dtype=torch.long), item_weight=1.0)
    out["loss"].backward()
    assert model.item_head.weight.grad is not None and float(model.item_head.weight.grad.abs().sum()) == 0.0
    model.zero_grad()
    out = model(ids, mask, ids, item_positions=torch.tensor([[0, 1]]), item_targets=torch.tensor([4]), item_weight=1.0)
    out["loss"].backward()
    assert float(model.item_head.weight.grad.abs().sum()) > 0 and float(out["item_head_loss"]) > 0
