"""Streaming preparation: a chunked Parquet corpus prepares to the same files as in memory."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from ttds.data.corpus import Corpus
from ttds.data.prepare import PrepareOptions, prepare_corpus
from ttds.data.raw import RawCorpus
from ttds.data.synthetic import SyntheticConfig, cluster_words, generate_to_parquet

PARTS = ("interactions", "items", "users", "sequences")


def test_streamed_file_prepares_like_the_same_table_in_memory(tmp_path):
    cfg = SyntheticConfig(n_items=600, n_users=900, n_clusters=12, seed=4)
    raw, truth = generate_to_parquet(cfg, tmp_path / "raw", chunk_users=250)  # 4 chunks
    assert pq.ParquetFile(raw.interactions).metadata.num_row_groups == 4
    # small batches force the chunked read and the chunked user-aligned write
    m_file = prepare_corpus(raw, tmp_path / "file", PrepareOptions(kcore=3, chunk_rows=1000))
    table_raw = RawCorpus(source="synthetic", name="synthetic", interactions=pq.read_table(raw.interactions),
                          items=pq.read_table(raw.items), rejects=raw.rejects)
    m_table = prepare_corpus(table_raw, tmp_path / "table", PrepareOptions(kcore=3))
    assert m_file["counts"] == m_table["counts"]
    for part in PARTS:
        assert pq.read_table(tmp_path / "file" / f"{part}.parquet").equals(pq.read_table(tmp_path / "table" / f"{part}.parquet")), part

    c = Corpus.open(tmp_path / "file")
    assert m_file["rejects"]["dropped"] == 0 and c.n_users > 800
    # the planted cluster walk survives (item ids map back through item_key)
    key = np.array([int(k) for k in c.items.column("item_key").to_pylist()])
    cl, succ = truth["item_cluster"][key], truth["successor"]
    follows = [succ[cl[a]] == cl[b] for s in c.train_sequences for a, b in zip(s[:-1], s[1:])]
    assert np.mean(follows) > 0.6
    assert all(len(s) >= 1 for s in c.train_sequences)
    assert c.user_texts[0].startswith("Nice ")


def test_cluster_words_stay_distinct_past_the_word_pairs():
    words = cluster_words(1200)
    assert len(set(words)) == 1200 and words[:20] == cluster_words(20)
