"""The Ray Train worker loop of the TTDS recommender (a function of a config dict).

Per epoch: stream this rank's share of task rows from Ray Data, turn them into prompts with
the *current* semantic IDs, optimise L = L_LLM + alpha (L_ID + beta L_token) under DeepSpeed;
then (dynamic index) re-encode X, re-assign IDs and report churn; validate by constrained
beam search on a slice of users per rank (sums all-reduced); report metrics with a
checkpoint; rank 0 keeps the best model folder; stop early when validation stalls.
With optim.ema_decay > 0 the weight average is what is validated, selected and kept
(checkpoints hold the live weights and the average, so a resumed run continues both).
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ttds.data.corpus import Corpus
from ttds.decode.beam import BeamConfig
from ttds.eval.evaluate import build_trie, evaluate_next_item
from ttds.eval.metrics import MetricAccumulator
from ttds.features.build import standardise_like
from ttds.index.table import SemanticIDTable
from ttds.index.towers import TwinTowerConfig, TwinTowerTokenizer
from ttds.llm.model import TTDSModel
from ttds.llm.dropout import add_residual_dropout
from ttds.llm.model_io import load_model, save_model
from ttds.llm.prompts import PromptBuilder, TokenTable, left_pad, semantic_vocabulary
from ttds.runtime import set_loopback_env
from ttds.train import deepspeed_utils as dsu
from ttds.train.collectives import all_reduce_values
from ttds.train.launch import starting_checkpoint
from ttds.train.lr_schedule import lr_factor
from ttds.train.weight_average import read_weight_average, start_average

log = logging.getLogger(__name__)


def backbone_config(c: dict):
    from ttds.llm.backbone import TINY_LLAMA, BackboneConfig

    b = c["backbone"]
    finetune = b["finetune"]
    if finetune == "auto":
        finetune = "full" if b["name"] == TINY_LLAMA else "lora"
    return BackboneConfig(
        name=b["name"], hidden_size=b["hidden_size"], num_layers=b["num_layers"], num_heads=b["num_heads"],
        num_kv_heads=b["num_kv_heads"], intermediate_size=b["intermediate_size"], lora=finetune == "lora",
        full_finetune=finetune == "full", lora_r=b["lora_r"], lora_alpha=b["lora_alpha"], seed=c["seed"],
        # fp32 parameters everywhere: DeepSpeed refuses mixed bf16 backbone / fp32 towers, and the
        # quantiser's distances need fp32; on CUDA the forward runs under bf16 autocast instead
        # (DeepSpeed's torch_autocast section, see dsu.deepspeed_config)
        dtype="float32",
    )


def code_vector_map(towers: TwinTowerTokenizer) -> dict[str, torch.Tensor]:
    """Token -> its code vector, the seed of the token's LLM embedding."""
    from ttds.index.table import level_token

    out = {}
    for kind, tower in (("item", towers.item), ("user", towers.user)):
        if tower is None:
            continue
        books = tower.code_vectors()
        for lv in range(books.shape[0]):
            for c in range(books.shape[1]):
                out[level_token(kind, lv, c)] = books[lv, c]
    return out


def build_model(c: dict, corpus: Corpus, tok_dir: Path):
    """Fresh model: backbone + semantic tokens (init from code vectors) + LoRA + towers + head."""
    from safetensors.torch import load_file

    from ttds.llm.backbone import add_semantic_tokens, apply_lora, load_backbone

    towers = TwinTowerTokenizer(TwinTowerConfig.from_dict(c["towers"]))
    towers.load_saved(load_file(str(tok_dir / "tokenizer.safetensors")))
    bcfg = backbone_config(c)
    backbone, tokenizer = load_backbone(bcfg, corpus.item_titles)
    vocab = semantic_vocabulary(c["item_levels"], c["user_levels"] if towers.user is not None else 0, c["codebook_size"], c["suffixes"])
    add_semantic_tokens(backbone, tokenizer, vocab, code_vector_map(towers), seed=c["seed"])
    backbone = apply_lora(backbone, bcfg)
    hidden = backbone.get_input_embeddings().weight.shape[1]
    from ttds.llm.fusion import fusion_for_towers  # MoC towers only (index.kind == "moc"): fuse ID code embeddings

    fusion = fusion_for_towers(c["towers"], c["item_levels"], c["codebook_size"], backbone, tokenizer)
    n_items = corpus.n_items if c.get("item_head_weight", 0.0) > 0 else 0
    model = TTDSModel(backbone, towers, hidden, c["x_dim"], fusion=fusion, n_items=n_items)
    from ttds.llm.item_embedding import build_item_embedding  # backbone.item_embedding: per-item input vectors

    model.set_item_embedding(build_item_embedding(c["backbone"].get("item_embedding", "none"), corpus.n_items, c["item_levels"],
                                                  c["codebook_size"], tokenizer, backbone, model.item_head))
    return model, tokenizer


class Indexer:
    """Holds the ID tables in force and rebuilds them from the towers (dynamic index)."""

    def __init__(self, items: SemanticIDTable, users: SemanticIDTable | None, suffixes: int, rule: str = "fresh"):
        self.items, self.users, self.suffixes, self.rule = items, users, suffixes, rule

    def reassign(self, towers: TwinTowerTokenizer, item_x: np.ndarray, user_x: np.ndarray) -> dict:
        """Re-encode every entity; a kind whose collisions would need more suffix tokens than
        the vocabulary reserved keeps the IDs in force (reported, never silently)."""
        towers.eval()
        device = next(towers.parameters()).device  # the towers live on the worker's GPU, the X on the host
        stats: dict = {"reindexed": 0}
        item_codes = towers.encode_items(torch.as_tensor(item_x, device=device)).cpu().numpy()
        self.items = self._swap("item", self.items, item_codes, stats)
        if self.users is not None and towers.user is not None:
            user_codes = towers.encode_users(torch.as_tensor(user_x, device=device)).cpu().numpy()
            self.users = self._swap("user", self.users, user_codes, stats)
        stats["reindexed"] = int("item_churn" in stats)
        return stats

    def _swap(self, kind: str, table: SemanticIDTable, codes: np.ndarray, stats: dict) -> SemanticIDTable:
        """The table to use next: the re-indexed one, or `table` when it would need too many suffixes."""
        new = table.with_codes(codes, self.rule)
        if new.max_suffix >= self.suffixes:
            stats[f"{kind}_reindex_skipped_max_suffix"] = new.max_suffix
            return table
        stats.update({f"{kind}_churn": new.churn(table), f"{kind}_collision_rate": new.collision_rate})
        return new


def make_builder(tokenizer, corpus: Corpus, indexer: Indexer, c: dict, model: TTDSModel | None = None) -> PromptBuilder:
    """The prompts of the ID tables in force; `model`'s item input vectors follow the same tables."""
    if model is not None and model.item_embedding is not None:
        model.item_embedding.set_items(indexer.items)
    vocab = tokenizer.get_vocab()
    return PromptBuilder(
        tokenizer,
        TokenTable.from_table(indexer.items, vocab),
        TokenTable.from_table(indexer.users, vocab) if indexer.users is not None else None,
        item_titles=corpus.item_titles if corpus.has_item_text else None,
        user_texts=corpus.user_texts if corpus.has_user_text else None,
        max_len=c["max_len"],
        next_item_user_id=c.get("next_item_user_id", True),
    )


def rows_to_examples(batch: dict, builder: PromptBuilder, rates: dict, rng: random.Random, spans: list | None = None):
    """Sample rows by task rate, build prompts; never empty (ranks must step together).

    `spans` (a list, filled in place): (row, query position, item) of every item in the
    next-item rows, for the item head (positions in the unpadded row)."""
    seqs, labels = [], []
    for r, (task, anchor, seq) in enumerate(zip(batch["task"], batch["anchor"], batch["seq"])):
        task = str(task)
        last_chance = r == len(batch["task"]) - 1 and not seqs
        if rng.random() >= rates.get(task, 0.0) and not last_chance:
            continue
        t = rng.randrange(builder.n_templates(task))
        if task == "next_item":
            ids, lab, row_spans = builder.next_item_spans(int(anchor), seq, t)
            if spans is not None:
                spans += [(len(seqs), q, i) for q, i in row_spans]
        elif task == "user_pred":
            ids, lab = builder.user_pred(int(anchor), seq, t)
        elif task == "comment":
            ids, lab = builder.comment(int(anchor), list(seq), t)
        elif task == "text2id":
            ids, lab = builder.text2id(int(anchor), t)
        else:
            ids, lab = builder.id2text(int(anchor), t)
        seqs.append(ids)
        labels.append(lab)
    return seqs, labels


def _eval_slice(c: dict, corpus: Corpus, split: str, limit: int, rank: int, world: int):
    uids, hists, targets = corpus.eval_arrays(split)
    if limit and limit < len(uids):
        pick = np.random.default_rng(c["seed"]).choice(len(uids), limit, replace=False)
        pick.sort()
        uids, hists, targets = uids[pick], [hists[i] for i in pick], targets[pick]
    sl = slice(rank, None, world)
    return uids[sl], hists[sl], targets[sl]


def validate(c, corpus, model, builder, trie, rank, world) -> dict:
    uids, hists, targets = _eval_slice(c, corpus, "valid", c["eval"]["valid_users"], rank, world)
    beam = BeamConfig(beam_width=c["eval"]["beam_width"], top_k=c["eval"]["top_k"])
    item_head = model.item_head if c["eval"].get("rank_by", "beam") == "item_head" else None
    accs = evaluate_next_item(model.backbone, builder, trie, uids, hists, targets, [0], beam, c["max_history"], c["eval"]["batch_size"],
                              exclude_seen=bool(c["eval"].get("exclude_seen", False)), item_head=item_head)
    acc = accs[0]
    if world > 1:
        keys = sorted(acc.sums)
        t = all_reduce_values([acc.count] + [acc.sums[k] for k in keys])
        acc = MetricAccumulator(ks=acc.ks, count=int(t[0]), sums=dict(zip(keys, t[1:])))
    return {f"valid_{k}": v for k, v in acc.result().items()}


def ttds_worker(c: dict) -> None:
    import ray.train
    from safetensors.numpy import load_file as load_np

    set_loopback_env()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(c["seed"] + rank)
    rng = random.Random(c["seed"] * 7919 + rank)
    corpus = Corpus.open(c["corpus_dir"])
    tok_dir = Path(c["tokenizer_dir"])
    feats = load_np(str(tok_dir / "features.safetensors"))
    item_x, user_x = feats["item_x"], feats["user_x"]

    start_epoch, best, stale = 0, -1.0, 0
    saved_average = None
    resume = starting_checkpoint(c)
    if resume is not None:
        with resume.as_directory() as d:
            loaded = load_model(d, trainable=True)
            state = json.loads((Path(d) / "train_state.json").read_text())
            saved_average = read_weight_average(d)
        model, tokenizer = loaded.model, loaded.tokenizer
        indexer = Indexer(loaded.items, loaded.users, c["suffixes"], c["reindex_rule"])
        start_epoch, best, stale = state["epoch"] + 1, state["best"], state["stale"]
        if "item_x" in state:
            item_x = np.asarray(state["item_x"], dtype=np.float32)
    else:
        model, tokenizer = build_model(c, corpus, tok_dir)
        users = SemanticIDTable.load(tok_dir, "user") if model.towers.user is not None and (tok_dir / "user_ids.parquet").exists() else None
        indexer = Indexer(SemanticIDTable.load(tok_dir, "item"), users, c["suffixes"], c["reindex_rule"])
    # training-only dropout hooks (not saved with the model, so a resumed run adds them again)
    dropout = c["backbone"].get("dropout", 0.0)
    hooked = add_residual_dropout(model.backbone, dropout)
    if dropout > 0 and rank == 0:
        print(f"backbone.dropout={dropout}: {hooked} dropout hooks" + ("" if hooked else
              " (none: this architecture names no embed_tokens/self_attn/mlp modules, so no dropout is applied)"), flush=True)
    builder = make_builder(tokenizer, corpus, indexer, c, model)
    trie = build_trie(builder, len(tokenizer))

    body = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.") and "embed_tokens" not in n and "lm_head" not in n]
    tower = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("towers.")]
    taken = {id(p) for p in body + tower}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    # group 0 (backbone body) is frozen during warm-up; towers move slower than the LLM so
    # re-assigned IDs change gradually (reported as churn)
    groups = [{"params": body}, {"params": rest}, {"params": tower, "lr": c["tower_lr"]}]
    engine = dsu.initialize(model, lr=c["lr"], stage=c["zero_stage"], micro_batch=c["batch_size"], param_groups=groups, weight_decay=c["weight_decay"],
                            offload=c.get("offload", False), autocast=torch.cuda.is_available())  # bf16 compute on GPUs
    if model.item_embedding is not None and model.item_embedding.tied and hasattr(model.item_head.weight, "ds_id"):
        # ZeRO-3: the tied input vectors read the item head's partitioned weight outside the head's
        # own forward; DeepSpeed gathers it for the embedding hook too once told
        import deepspeed

        deepspeed.zero.register_external_parameter(model.item_embedding, model.item_head.weight)
    averager = start_average(model, float(c.get("ema_decay", 0.0)), saved_average, say=print if rank == 0 else (lambda _: None))
    base_lrs = [g["lr"] for g in engine.optimizer.param_groups]  # body, rest, towers (optim.lr_schedule scales them)
    shard = ray.train.get_dataset_shard("train")
    alpha = c["alpha"] if c["dmvae"] else 0.0
    smoothing = float(c.get("label_smoothing", 0.0))
    beta = c["beta"] if c["dmvae"] else 0.0
    item_x_t, user_x_t = torch.as_tensor(item_x), torch.as_tensor(user_x)
    ret_w = float(c.get("retrieval_weight", 0.0))  # optional retrieval fast-path loss (ttds.decode.retrieval)
    ret_users = [u for u, s in enumerate(corpus.train_sequences) if len(s) >= 2] if ret_w > 0 else []
    item_w = float(c.get("item_head_weight", 0.0))  # optional item head (TTDSModel.item_head)
    if item_w > 0 and model.item_head is None:
        raise ValueError("loss.item_head_weight > 0 but the model has no item head (resumed from a model trained without one)")
    if c["backbone"].get("item_embedding", "none") != "none" and model.item_embedding is None:
        raise ValueError("backbone.item_embedding is set but the model has none (resumed from a model trained without it)")
    run_start = time.time()

    for epoch in range(start_epoch, c["epochs"]):
        reindex: dict = {}
        if c["dynamic"] and epoch > 0 and epoch % c["reindex_every"] == 0:
            # Re-assign IDs at the START of an epoch, so the epoch trains on the IDs it is then
            # validated and checkpointed with. Re-assigning at the end of an epoch (before
            # validation) left 20-28% of items with IDs the LLM had never seen in every saved
            # model (measured on Scientific: TTDS validated at half the static-ID TIGER's NDCG).
            with dsu.gathered(model.parameters()):
                if c["text_source"]:
                    item_x = recompute_text_x(model, tokenizer, corpus, c, item_x)
                    item_x_t = torch.as_tensor(item_x)
                reindex = indexer.reassign(model.towers, item_x, user_x)
            builder = make_builder(tokenizer, corpus, indexer, c, model)
            trie = build_trie(builder, len(tokenizer))
        frozen = epoch < c["warmup_epochs"]
        scale = lr_factor(c.get("lr_schedule", "constant"), epoch, c["epochs"], c["warmup_epochs"], c.get("min_lr_ratio", 0.1))
        for i, group in enumerate(engine.optimizer.param_groups):
            group["lr"] = 0.0 if (i == 0 and frozen) else base_lrs[i] * scale
        model.train()
        t0, n_examples, steps = time.time(), 0, 0
        sums = {"loss": 0.0, "llm_loss": 0.0, "id_loss": 0.0, "token_loss": 0.0, **({"retrieval_loss": 0.0} if ret_w > 0 else {}),
                **({"item_head_loss": 0.0} if item_w > 0 else {})}
        for batch in shard.iter_batches(batch_size=c["batch_size"], batch_format="numpy", local_shuffle_buffer_size=4096, local_shuffle_seed=c["seed"] + epoch):
            spans: list | None = [] if item_w > 0 else None
            seqs, labels = rows_to_examples(batch, builder, c["rates"], rng, spans)
            ids, mask, lab = left_pad(seqs, builder.pad_id, labels)
            kw = {}
            if item_w > 0:
                kw.update(item_head_kwargs(spans, [len(x) for x in seqs], ids.shape[1]))
            if alpha > 0:
                pick = torch.randint(0, len(item_x_t), (c["id_batch"],))
                id_ids, id_mask, _ = left_pad(builder.id_sequences(pick.tolist()), builder.pad_id)
                kw.update({"id_input_ids": id_ids, "id_attention_mask": id_mask, "id_targets": item_x_t[pick], "item_x": item_x_t[pick]})
                if model.towers.user is not None:
                    kw["user_x"] = user_x_t[torch.randint(0, len(user_x_t), (c["id_batch"],))]
            if ret_w > 0:
                kw.update(retrieval_kwargs(builder, corpus, ret_users, c, rng, item_x_t))
            ret_kw = {"ret_weight": ret_w, "ret_temperature": c.get("retrieval_temperature", 0.1)} if ret_w > 0 else {}
            if item_w > 0:
                ret_kw["item_weight"] = item_w
                ret_kw["item_negatives"] = int(c.get("item_head_negatives", 0))  # 0 = full softmax
            out = engine(ids.to(engine.device), mask.to(engine.device), lab.to(engine.device), alpha=alpha, beta=beta, label_smoothing=smoothing, **ret_kw, **{k: v.to(engine.device) for k, v in kw.items()})
            engine.backward(out["loss"])
            engine.step()
            if averager is not None:
                averager.update()
            for k in sums:
                sums[k] += float(out[k].detach())
            n_examples += len(seqs)
            steps += 1
            if rank == 0 and steps % c.get("log_every", 100) == 0:
                # progress inside a long epoch (Ray shows worker logs on the driver)
                print(f"epoch {epoch} step {steps}: {n_examples} examples, {n_examples / (time.time() - t0):.1f} ex/s, "
                      f"loss {sums['loss'] / steps:.4f} (llm {sums['llm_loss'] / steps:.4f})", flush=True)
        train_s = time.time() - t0
        metrics = {"epoch": epoch, "frozen_backbone": int(frozen), "lr_scale": scale, "examples_per_s": n_examples / max(train_s, 1e-9), "train_s": train_s,
                   **{k: v / max(steps, 1) for k, v in sums.items()}, **reindex}
        if torch.cuda.is_available():  # the figure that decides ZeRO stage / offload on a GPU cluster
            metrics["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        with dsu.gathered(model.parameters()):
            t1 = time.time()
            if averager is not None:  # what the live weights score, beside the averaged ones that are selected
                metrics["valid_live_NDCG@10"] = validate(c, corpus, model, builder, trie, rank, world)["valid_NDCG@10"]
            with averager.swapped_in() if averager is not None else nullcontext():
                metrics.update(validate(c, corpus, model, builder, trie, rank, world))
                metrics["valid_s"] = time.time() - t1
                score = metrics["valid_NDCG@10"]
                improved = score > best
                best, stale = (score, 0) if improved else (best, stale + 1)
                metrics.update({"best_valid_NDCG@10": best, "stale_epochs": stale})
                meta = model_meta(c, epoch, metrics)
                if rank == 0 and improved:  # the weights just validated: the average, when there is one
                    save_model(c["best_dir"], model, tokenizer, indexer.items, indexer.users, meta, tok_dir / "features.safetensors")
            with tempfile.TemporaryDirectory() as d:
                checkpoint = None
                if rank == 0:  # the live weights (training resumes from them) and the average beside them
                    save_model(d, model, tokenizer, indexer.items, indexer.users, meta, tok_dir / "features.safetensors")
                    if averager is not None:
                        averager.save(d)
                    state = {"epoch": epoch, "best": best, "stale": stale}
                    if c["dynamic"] and c["text_source"]:
                        state["item_x"] = item_x.tolist()
                    (Path(d) / "train_state.json").write_text(json.dumps(state))
                    checkpoint = ray.train.Checkpoint.from_directory(d)
                    with open(c["history_path"], "a") as fh:  # the full per-epoch record (Ray keeps only retained checkpoints' metrics)
                        fh.write(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}) + "\n")
                ray.train.report(metrics, checkpoint=checkpoint)
        if stale >= c["patience"]:
            break
        if over_time_budget(c, time.time() - run_start, epoch - start_epoch + 1):
            break


def model_meta(c: dict, epoch: int, metrics: dict) -> dict:
    return {
        "epoch": epoch,
        "max_history": c["max_history"],
        "max_len": c["max_len"],
        "next_item_user_id": c.get("next_item_user_id", True),
        "suffixes": c["suffixes"],
        "item_levels": c["item_levels"],
        "user_levels": c["user_levels"],
        "codebook_size": c["codebook_size"],
        "corpus_dir": c["corpus_dir"],
        "source": c["source"],
        "exclude_seen": bool(c["eval"].get("exclude_seen", False)),  # how it was selected; jobs/evaluate.py's default
        "retrieval_pool": "last" if c.get("retrieval_weight", 0.0) > 0 else "mean",  # ttds.decode.retrieval.pool_of
        "rank_by": c["eval"].get("rank_by", "beam"),  # how it was selected; jobs/evaluate.py's default
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "config": c["job_config"],
    }


def recompute_text_x(model: TTDSModel, tokenizer, corpus: Corpus, c: dict, old_x: np.ndarray) -> np.ndarray:
    """X of items re-encoded by the backbone as it is now (the 'dynamic' part for text X)."""
    from ttds.llm.backbone import encode_texts

    vecs = encode_texts(model.backbone, tokenizer, corpus.item_texts, batch_size=32, max_length=c["text_max_length"])
    return standardise_like(vecs, old_x, c["text_dims"])


def retrieval_kwargs(builder: PromptBuilder, corpus: Corpus, users: list[int], c: dict, rng: random.Random, item_x_t: torch.Tensor) -> dict:
    """Model kwargs of the retrieval loss: next-item prompts of random training users (every
    rank the same count, so ranks step together) scored against the whole catalogue's X."""
    from ttds.decode.retrieval import retrieval_examples

    pick = [users[rng.randrange(len(users))] for _ in range(c.get("retrieval_batch", 32))]
    prompts, targets = retrieval_examples(builder, corpus.train_sequences, pick, c["max_history"], rng)
    ids, mask, _ = left_pad(prompts, builder.pad_id)
    return {"ret_input_ids": ids, "ret_attention_mask": mask, "ret_targets": torch.as_tensor(targets), "ret_item_x": item_x_t}


def item_head_kwargs(spans: list[tuple[int, int, int]], lengths: list[int], width: int) -> dict:
    """Model kwargs of the item-head loss: (row, position) in the LEFT-padded batch and the item."""
    rows = [(r, width - lengths[r] + q) for r, q, _ in spans]
    return {"item_positions": torch.as_tensor(rows, dtype=torch.long).reshape(-1, 2),
            "item_targets": torch.as_tensor([i for _, _, i in spans], dtype=torch.long)}


def over_time_budget(c: dict, elapsed_s: float, epochs_done: int) -> bool:
    """Would the next epoch end past `time_budget_s`? Decided on the slowest rank's clock
    (all-reduced max) so every rank stops at the same epoch."""
    budget = float(c.get("time_budget_s", 0.0) or 0.0)
    if budget <= 0:
        return False
    elapsed = all_reduce_values([elapsed_s], "max")[0]
    return elapsed + elapsed / max(epochs_done, 1) > budget
