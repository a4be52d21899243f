"""The Ray Data example streams, consumed from inside a Ray Train worker."""

from __future__ import annotations

import json

import numpy as np

from ttds.data.corpus import Corpus
from ttds.data.examples import next_item_dataset


def expected_windows(corpus: Corpus) -> int:
    return sum(max(0, len(s) - 1) for s in corpus.train_sequences)


def test_windows_valid_and_test_rows(ray_session, synthetic_corpus):
    c = Corpus.open(synthetic_corpus)
    rows = next_item_dataset(synthetic_corpus, "train", max_history=3).take_all()
    assert len(rows) == expected_windows(c)
    r = next(r for r in rows if r["user_id"] == 0 and len(r["history"]) == 3)
    seq = list(c.train_sequences[0])
    t = seq.index(r["target"])
    assert list(r["history"]) == seq[t - 3 : t]
    test = {r["user_id"]: r for r in next_item_dataset(synthetic_corpus, "test", max_history=50).take_all()}
    uids, hist, target = c.eval_arrays("test")
    assert len(test) == len(uids)
    assert list(test[int(uids[0])]["history"]) == list(hist[0]) and test[int(uids[0])]["target"] == target[0]
    seqs = next_item_dataset(synthetic_corpus, "train", max_history=4, layout="sequences").take_all()
    assert all(2 <= len(r["items"]) <= 5 for r in seqs)


def _count_shard(config):
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    n, targets = 0, 0
    for batch in shard.iter_batches(batch_size=64, batch_format="numpy"):
        n += len(batch["target"])
        targets += int(np.sum(batch["target"]))
    rank = ray.train.get_context().get_world_rank()
    with open(f"{config['out']}/rank{rank}.json", "w") as f:
        json.dump({"rows": n, "target_sum": targets}, f)


def test_stream_into_ray_train_workers(ray_session, synthetic_corpus, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ds = next_item_dataset(synthetic_corpus, "train", max_history=5)
    trainer = TorchTrainer(
        _count_shard,
        train_loop_config={"out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets={"train": ds},
        run_config=RunConfig(storage_path=str(tmp_path), name="stream"),
    )
    trainer.fit()
    c = Corpus.open(synthetic_corpus)
    shards = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Ray Train splits the stream into equal shards (equal=True drops < world_size rows so
    # that workers stay in lock-step); together they cover the dataset
    assert shards[0]["rows"] == shards[1]["rows"] > 0
    assert expected_windows(c) - 2 < sum(s["rows"] for s in shards) <= expected_windows(c)
