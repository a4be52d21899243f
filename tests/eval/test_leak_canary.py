"""Leak canary: validation and test targets that appear nowhere in training must reach no training input.

The corpus is the generated one, prepared by the real pipeline, with two events appended to every
user after all training events: a validation item and a test item of its own ("canary" items, each
bought by that user only, with a review that names it). Leave-one-out makes them exactly the
valid/test targets, so any of their ids (or review text) found in a training input is a leak:
TTDS task rows (next item, comment, user prediction = buyer lists), the Ray Data training rows of
SASRec/GRU4Rec (both layouts), popularity counts and the users' text. Tokenizer features are dense
vectors, where "appears" means nothing; for them the test swaps which user holds which canary
(a second corpus with the same training events and other valid/test targets) and requires the
collaborative and LightGCN vectors of every item and user, and the text-less users' X, to be unchanged.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ttds.data import schema
from ttds.data.corpus import Corpus
from ttds.data.examples import next_item_dataset
from ttds.data.prepare import prepare_corpus
from ttds.data.raw import RawCorpus
from ttds.data.synthetic import SyntheticConfig, generate
from ttds.data.task_examples import buyers_table, write_task_rows
from ttds.config import FeatureConfig, LightGCNConfig
from ttds.features.build import build_features, users_from_items
from ttds.features.collaborative import CollaborativeConfig
from ttds.train.lightgcn import lightgcn_vectors

MAX_HISTORY = 5
N_USERS = 60


def _canary_raw(shift: int) -> RawCorpus:
    """The generated corpus plus, per user u, a validation then a test event on canary items of user
    (u + shift) mod N_USERS, all later than every training event (so item ids of training items and the
    canaries' id range do not depend on `shift`)."""
    raw, _ = generate(SyntheticConfig(n_items=50, n_users=N_USERS, n_clusters=5, min_len=5, max_len=8, seed=3))
    inter = raw.interactions.to_pydict()
    after = max(inter["timestamp"]) + 1000
    for u in range(N_USERS):
        owner = (u + shift) % N_USERS
        for k, part in enumerate(("valid", "test")):
            inter["user_key"].append(str(u))
            inter["item_key"].append(f"canary-{part}-{owner}")
            inter["timestamp"].append(after + 10 * u + k)
            inter["rating"].append(5.0)
            inter["review"].append(f"CANARY {part} review of item {owner}")
    items = raw.items.to_pydict()
    for owner in range(N_USERS):
        for part in ("valid", "test"):
            items["item_key"].append(f"canary-{part}-{owner}")
            for f in ("title", "description", "brand", "categories"):
                items[f].append(f"Canary {part} {owner}" if f == "title" else None)
    return RawCorpus(source="synthetic", name="canary", interactions=pa.Table.from_pydict(inter, schema=schema.RAW_INTERACTIONS),
                     items=pa.Table.from_pydict(items, schema=schema.RAW_ITEMS), rejects=raw.rejects)


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    out = {}
    for shift in (0, 1):
        folder = tmp_path_factory.mktemp(f"canary{shift}")
        prepare_corpus(_canary_raw(shift), folder)
        out[shift] = Corpus.open(folder)
    return out


def _canary_ids(corpus: Corpus) -> set[int]:
    keys = corpus.items.column("item_key").to_pylist()
    return {i for i, k in enumerate(keys) if k.startswith("canary-")}


def test_canaries_are_exactly_the_held_out_targets(canary):
    corpus = canary[0]
    ids = _canary_ids(corpus)
    assert len(ids) == 2 * N_USERS
    for split in ("valid", "test"):
        users, _, targets = corpus.eval_arrays(split)
        assert len(users) == N_USERS and set(targets.tolist()) <= ids  # every user's held-out item is a canary
    assert not ids & {int(i) for s in corpus.train_sequences for i in s}
    assert (corpus.item_popularity()[sorted(ids)] == 0).all()  # popularity counts training events only


def test_no_canary_in_ttds_task_rows_buyer_lists_or_user_text(canary, tmp_path):
    corpus = canary[0]
    ids = _canary_ids(corpus)
    tasks = ["next_item", "comment", "user_pred", "text2id", "id2text"]
    rows = pq.read_table(write_task_rows(corpus, tmp_path, tasks, MAX_HISTORY)).to_pandas()
    assert set(rows["task"]) == set(tasks)
    interaction_rows = rows[rows["task"].isin(["next_item", "comment", "user_pred"])]
    leaked = [(t, a) for t, a, s in interaction_rows[["task", "anchor", "seq"]].itertuples(index=False)
              if (t == "user_pred" and a in ids) or (t != "user_pred" and ids & set(s.tolist()))]
    assert not leaked, f"canary items in training task rows: {leaked[:5]}"
    # text2id / id2text name every titled item of the catalogue (metadata, no interaction): they carry no sequence
    assert all(len(s) == 0 for s in rows[rows["task"].isin(["text2id", "id2text"])]["seq"])
    buyers = buyers_table(corpus, MAX_HISTORY + 1)
    assert len(buyers) and not ids & set(buyers["anchor"].tolist())
    texts = [t for t in corpus.user_texts if t]
    assert texts and not any("CANARY" in t for t in texts)  # user text = training reviews only


def test_no_canary_in_sasrec_training_rows(canary, ray_session):
    corpus = canary[0]
    ids = _canary_ids(corpus)
    for layout, col in (("sequences", "items"), ("windows", "history")):
        rows = next_item_dataset(corpus.root, "train", max_history=MAX_HISTORY, layout=layout).take_all()
        assert rows
        seen = {int(i) for r in rows for i in r[col]} | {int(r["target"]) for r in rows if "target" in r}
        assert not ids & seen, f"{layout}: canary items in SASRec/GRU4Rec training rows"


def test_tokenizer_features_do_not_depend_on_held_out_targets(canary):
    """Same training events, other valid/test targets: every collaborative and LightGCN vector is unchanged."""
    a, b = canary[0], canary[1]
    assert a.n_items == b.n_items and all(np.array_equal(x, y) for x, y in zip(a.train_sequences, b.train_sequences))
    _, _, ta = a.eval_arrays("test")
    _, _, tb = b.eval_arrays("test")
    keys_a, keys_b = a.items.column("item_key").to_pylist(), b.items.column("item_key").to_pylist()
    assert [keys_a[i] for i in ta] != [keys_b[i] for i in tb]  # the held-out targets really differ
    cfg = FeatureConfig(source="collaborative", collaborative=CollaborativeConfig(dim=8, epochs=2, batch_size=64),
                        lightgcn=LightGCNConfig(dim=8, layers=2, epochs=2, batch_size=64, ray_train=False))
    x = np.random.default_rng(0).normal(size=(a.n_items, 4)).astype(np.float32)  # any item X, e.g. text vectors
    np.testing.assert_array_equal(users_from_items(a, x), users_from_items(b, x))  # a user without text: its training items
    for source in ("collaborative", "lightgcn"):
        cfg.source = source
        fa, fb = build_features(a, cfg, lightgcn_vectors), build_features(b, cfg, lightgcn_vectors)
        np.testing.assert_allclose(fa.item_x, fb.item_x, rtol=0, atol=1e-6, err_msg=f"{source} item X depends on valid/test")
        np.testing.assert_allclose(fa.user_x, fb.user_x, rtol=0, atol=1e-6, err_msg=f"{source} user X depends on valid/test")


def test_canary_ids_of_both_corpora_share_one_range(canary):
    """The swap keeps item ids of training items; only the canaries' assignment to users changes."""
    a, b = canary[0], canary[1]
    assert _canary_ids(a) == _canary_ids(b)
    ka, kb = a.items.column("item_key"), b.items.column("item_key")
    train = pc.invert(pc.starts_with(ka, "canary-"))
    assert ka.filter(train).to_pylist() == kb.filter(train).to_pylist()
