"""Prefix trie of valid semantic IDs, stored as flat tensors.

Why a trie and not a per-position allowed-token set: with a per-position set, a beam can
combine a valid first token of one item with a valid second token of another and end on a
code that names no item. The trie allows exactly the continuations of real IDs.

Why flat tensors (CSR) and not Python dicts: during beam search the allowed-token mask for
thousands of beam states is needed at every step. With the children of every node in one
contiguous, token-sorted range, that mask (``allowed_mask``) or the padded child table
(``children``, what beam search uses) is a handful of gather / repeat_interleave / scatter
ops on the model's device, with no Python loop over beams.

Layout (``N`` nodes, node 0 is the root, nodes numbered breadth-first in lexicographic order,
so the children of a node are contiguous and sorted by token):

- ``child_ptr[N + 1]``: the children of node ``n`` are edges ``child_ptr[n]:child_ptr[n+1]``.
- ``child_token[E]``: the token of each edge (sorted within a node's range).
- ``child_node[E]``: the node each edge leads to.
- ``edge_key[E]``: ``parent * vocab_size + token``; globally sorted, so one ``searchsorted``
  finds the edge for a whole batch of (node, token) pairs.
- ``terminal_item[N]``: the item whose ID ends at the node, ``-1`` if none.
- ``depth[N]``: the node's depth (root = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["PrefixTrie", "build_trie"]


@dataclass(eq=False)  # tensors: element-wise == would make dataclass equality meaningless
class PrefixTrie:
    """Prefix trie over item semantic IDs (token sequences), as flat tensors.

    Build it with :meth:`from_sequences`; the constructor takes the already-flat arrays.
    Node id ``-1`` stands for "no node" (a beam that left the trie) and is accepted by all
    methods, which then answer "nothing allowed" / ``-1``.
    """

    child_ptr: torch.Tensor
    child_token: torch.Tensor
    child_node: torch.Tensor
    edge_key: torch.Tensor
    terminal_item: torch.Tensor
    depth: torch.Tensor
    vocab_size: int
    max_depth: int
    min_depth: int

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sequences(
        cls,
        seqs: Sequence[Sequence[int]],
        item_ids: Sequence[int],
        vocab_size: int,
    ) -> "PrefixTrie":
        """Build the trie from one token sequence per item.

        Raises ``ValueError`` if the lengths disagree, a sequence is empty, a token is out of
        ``[0, vocab_size)``, an item id is negative, or two IDs are equal or one is a proper
        prefix of another (then decoding could not tell where an ID ends).
        """
        n = len(seqs)
        if n != len(item_ids):
            raise ValueError(f"{n} sequences but {len(item_ids)} item ids")
        if n == 0:
            raise ValueError("cannot build a trie from zero sequences")
        items = np.asarray(item_ids, dtype=np.int64)
        if (items < 0).any():
            raise ValueError("item ids must be >= 0 (-1 is reserved for 'no item')")
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        if (lengths == 0).any():
            raise ValueError(f"sequence {int(np.argmin(lengths))} is empty")
        max_len = int(lengths.max())
        # Pad with -1: it sorts before every real token, so a prefix sorts right before the
        # sequences it is a prefix of.
        padded = np.full((n, max_len), -1, dtype=np.int64)
        for i, s in enumerate(seqs):
            padded[i, : lengths[i]] = np.asarray(s, dtype=np.int64)
        real = padded[np.arange(max_len)[None, :] < lengths[:, None]]
        if real.size and (real.min() < 0 or real.max() >= vocab_size):
            raise ValueError(f"tokens must lie in [0, {vocab_size}); got [{real.min()}, {real.max()}]")

        order = np.lexsort(padded.T[::-1])  # lexicographic: column 0 is the primary key
        padded, lengths, items = padded[order], lengths[order], items[order]
        _check_prefix_free(padded, lengths, items)

        # Breadth-first, lexicographic node numbering, one depth at a time (vectorised).
        node_of = np.zeros((n, max_len + 1), dtype=np.int64)  # node reached after d tokens
        parents, tokens, depths = [], [], [np.zeros(1, dtype=np.int64)]
        next_id = 1
        for d in range(max_len):
            rows = np.nonzero(lengths > d)[0]
            sub = padded[rows, : d + 1]
            new = np.ones(len(rows), dtype=bool)
            new[1:] = (sub[1:] != sub[:-1]).any(axis=1)
            ids = next_id + np.cumsum(new) - 1
            node_of[rows, d + 1] = ids
            first = rows[new]
            parents.append(node_of[first, d])
            tokens.append(padded[first, d])
            depths.append(np.full(len(first), d + 1, dtype=np.int64))
            next_id += int(new.sum())
        num_nodes = next_id
        parent = np.concatenate(parents)
        token = np.concatenate(tokens)
        # Edge e leads to node e + 1 (nodes other than the root are numbered in edge order);
        # parents are non-decreasing, so the CSR pointer is a bincount + cumsum.
        counts = np.bincount(parent, minlength=num_nodes)
        child_ptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(counts, out=child_ptr[1:])
        terminal = np.full(num_nodes, -1, dtype=np.int64)
        terminal[node_of[np.arange(n), lengths]] = items
        return cls(
            child_ptr=torch.from_numpy(child_ptr),
            child_token=torch.from_numpy(token),
            child_node=torch.arange(1, num_nodes, dtype=torch.long),
            edge_key=torch.from_numpy(parent * vocab_size + token),
            terminal_item=torch.from_numpy(terminal),
            depth=torch.from_numpy(np.concatenate(depths)),
            vocab_size=int(vocab_size),
            max_depth=max_len,
            min_depth=int(lengths.min()),
        )

    # ------------------------------------------------------------------ properties
    @property
    def num_nodes(self) -> int:
        return int(self.terminal_item.numel())

    @property
    def num_items(self) -> int:
        return int((self.terminal_item >= 0).sum())

    @property
    def device(self) -> torch.device:
        return self.child_ptr.device

    def root(self, batch: int) -> torch.Tensor:
        """``batch`` copies of the root node id, on the trie's device."""
        return torch.zeros(batch, dtype=torch.long, device=self.device)

    def to(self, device: torch.device | str) -> "PrefixTrie":
        """A copy with every tensor on ``device`` (the model's device for decoding)."""
        move = lambda t: t.to(device)  # noqa: E731
        return PrefixTrie(
            child_ptr=move(self.child_ptr),
            child_token=move(self.child_token),
            child_node=move(self.child_node),
            edge_key=move(self.edge_key),
            terminal_item=move(self.terminal_item),
            depth=move(self.depth),
            vocab_size=self.vocab_size,
            max_depth=self.max_depth,
            min_depth=self.min_depth,
        )

    # ------------------------------------------------------------------ batched queries
    def num_children(self, nodes: torch.Tensor) -> torch.Tensor:
        """Number of allowed next tokens per node (0 for ``-1``)."""
        safe = nodes.clamp(min=0)
        count = self.child_ptr[safe + 1] - self.child_ptr[safe]
        return torch.where(nodes >= 0, count, torch.zeros_like(count))

    def allowed_mask(self, nodes: torch.Tensor) -> torch.Tensor:
        """``BoolTensor[B, vocab_size]``: which tokens may follow each node.

        Built without a Python loop over beams: repeat every row index by its child count,
        compute each child's edge index as ``start + offset within the row``, and scatter.
        """
        nodes = nodes.reshape(-1)
        b = nodes.numel()
        mask = torch.zeros(b, self.vocab_size, dtype=torch.bool, device=self.device)
        counts = self.num_children(nodes)
        total = int(counts.sum())
        if total == 0:
            return mask
        rows = torch.repeat_interleave(torch.arange(b, device=self.device), counts, output_size=total)
        row_start = torch.cumsum(counts, 0) - counts  # first position of each row in the flat list
        offset = torch.arange(total, device=self.device) - row_start[rows]
        edges = self.child_ptr[nodes.clamp(min=0)][rows] + offset
        mask[rows, self.child_token[edges]] = True
        return mask

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Allowed next tokens per node as a padded ``[B, F]`` table plus its validity mask.

        ``F`` is the largest child count among ``nodes``. Why this besides
        :meth:`allowed_mask`: beam search only needs the scores of allowed tokens, and
        gathering ``F`` of them per beam (F is 256 at the root, a few dozen or fewer below)
        is much cheaper than masking and top-k'ing the whole vocabulary. Padding slots hold
        token 0 and ``valid = False``.
        """
        nodes = nodes.reshape(-1)
        counts = self.num_children(nodes)
        width = int(counts.max()) if nodes.numel() else 0
        slot = torch.arange(width, device=self.device)
        valid = slot.unsqueeze(0) < counts.unsqueeze(1)
        if width == 0:
            return torch.zeros(nodes.numel(), 0, dtype=torch.long, device=self.device), valid
        edge = self.child_ptr[nodes.clamp(min=0)].unsqueeze(1) + slot.unsqueeze(0)
        edge = edge.clamp(max=self.child_token.numel() - 1)
        tokens = torch.where(valid, self.child_token[edge], torch.zeros_like(edge))
        return tokens, valid

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Node reached from each node by each token; ``-1`` where the edge does not exist."""
        nodes, tokens = torch.broadcast_tensors(nodes, tokens)
        if self.edge_key.numel() == 0:
            return torch.full_like(nodes, -1)
        key = nodes * self.vocab_size + tokens
        pos = torch.searchsorted(self.edge_key, key.reshape(-1)).reshape(key.shape)
        pos = pos.clamp(max=self.edge_key.numel() - 1)
        ok = (self.edge_key[pos] == key) & (nodes >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        return torch.where(ok, self.child_node[pos], torch.full_like(pos, -1))

    def parent(self) -> torch.Tensor:
        """Parent node of every node ``[num_nodes]`` (the root's is ``-1``)."""
        return torch.cat([self.edge_key.new_full((1,), -1), self.edge_key // self.vocab_size])

    def prior_bias(self, item_weight: np.ndarray, strength: float) -> torch.Tensor:
        """Per-node additive score ``[num_nodes]`` that makes a search rank by
        ``log P(ID | prompt) - strength * log prior(item)``, applied step by step.

        ``prior(item)`` is ``item_weight`` normalised (e.g. training count + 1). Entering node
        ``c`` from its parent ``p`` adds ``-strength * log(m(c) / m(p))``, where ``m`` is the
        weight of all items under a node; the terms telescope along an ID to
        ``-strength * log(w_item / w_total)``. Applied at every step (not to the finished list)
        so that the beam itself moves toward less popular branches instead of only reordering
        what a popularity-leaning search already kept.
        """
        w = np.asarray(item_weight, dtype=np.float64)
        if (w <= 0).any():
            raise ValueError("item weights must be > 0 (add a smoothing constant to counts)")
        mass = np.zeros(self.num_nodes, dtype=np.float64)
        term = self.terminal_item.cpu().numpy()
        at = np.flatnonzero(term >= 0)
        if (term[at] >= len(w)).any():
            raise ValueError(f"the trie has item ids beyond the {len(w)} weights given")
        mass[at] = w[term[at]]
        parent = self.parent().cpu().numpy()
        depth = self.depth.cpu().numpy()
        for d in range(int(depth.max()), 0, -1):  # children before parents: a node's mass is final when added up
            nodes = np.flatnonzero(depth == d)
            np.add.at(mass, parent[nodes], mass[nodes])
        bias = np.zeros(self.num_nodes, dtype=np.float64)
        bias[1:] = -strength * (np.log(mass[1:]) - np.log(mass[parent[1:]]))
        return torch.from_numpy(bias.astype(np.float32)).to(self.device)

    def item_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item id whose ID ends at each node, ``-1`` if none (or the node is ``-1``)."""
        item = self.terminal_item[nodes.clamp(min=0)]
        return torch.where(nodes >= 0, item, torch.full_like(item, -1))

    def is_terminal(self, nodes: torch.Tensor) -> torch.Tensor:
        """True where an item's ID ends at the node."""
        return self.item_at(nodes) >= 0

    def lookup(self, sequences: torch.Tensor) -> torch.Tensor:
        """Item for each token sequence ``[..., L]``, ``-1`` if it names none.

        The item is the first terminal node on the path, so tokens after a complete ID are
        ignored (IDs are prefix-free, so that item is unique). Used to read unconstrained
        generations back as items.
        """
        lead = sequences.shape[:-1]
        seqs = sequences.reshape(-1, sequences.shape[-1]).to(self.device)
        node = self.root(seqs.shape[0])
        found = torch.full_like(node, -1)
        for t in range(seqs.shape[1]):  # loop over positions only, batched over sequences
            node = self.step(node, seqs[:, t])
            item = self.item_at(node)
            found = torch.where(found < 0, item, found)
        return found.reshape(lead)


def _check_prefix_free(padded: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> None:
    """Raise if two (lexicographically sorted) IDs are equal or one is a prefix of another.

    In sorted order, every sequence that has ``s`` as a prefix comes right after ``s``, so
    comparing neighbours is enough.
    """
    if len(lengths) < 2:
        return
    a, b = padded[:-1], padded[1:]
    la = lengths[:-1]
    cols = np.arange(padded.shape[1])[None, :]
    same_prefix = ((a == b) | (cols >= la[:, None])).all(axis=1)  # b starts with all of a
    bad = np.nonzero(same_prefix)[0]
    if bad.size:
        i = int(bad[0])
        sa = padded[i, : lengths[i]].tolist()
        sb = padded[i + 1, : lengths[i + 1]].tolist()
        kind = "identical to" if lengths[i] == lengths[i + 1] else "a prefix of"
        raise ValueError(
            f"semantic IDs must be unique and prefix-free: ID {sa} of item {int(items[i])} is "
            f"{kind} ID {sb} of item {int(items[i + 1])}"
        )


def build_trie(builder, vocab_size: int) -> PrefixTrie:
    """The trie of a model's item IDs: `builder.items` (a `ttds.llm.prompts.PromptBuilder`'s token
    table) holds each item's ID as LM token ids; item i is row i. Evaluation and serving both
    build it here, from the same table, so they decode the same catalogue."""
    seqs = builder.items.sequences()
    return PrefixTrie.from_sequences(seqs, list(range(len(seqs))), vocab_size)
