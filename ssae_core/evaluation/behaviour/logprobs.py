"""Log-probabilities of target tokens under steering, batched, with an exact final-layer shortcut.

Speed: texts that share a context are packed into one row (``share_contexts``): the context
once, then every target after it, each target attending to the context and to its own earlier
tokens only (a 4D attention mask, positions restarting after the context), so a question's
context runs once for all its MC1 choices; identical texts are scored once. At the final layer a
steered logit row is ``logits + W_head @ v`` (the LM head is linear),
so each batch runs the model once and every condition costs one log-softmax; this shortcut is
checked against the model's own logits on the first batch (and against
:func:`~ssae_core.lm.steer.steer` in the tests). At one block L, the blocks up to L are the same
in every condition: they run once per batch and each condition runs only the blocks after L
(about half the model at block 15 of 30). Any other mix runs one steered forward pass per
condition.

Shapes in names: N texts, C steering conditions, P scored positions, V vocabulary, D width.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ssae_core.errors import InputError
from ssae_core.lm.layers import decoder_blocks, num_layers, resolve_layer, text_config
from ssae_core.lm.steer import SteeringVector, steer
from ssae_core.lm.tokens import left_pad
from ssae_core.progress import show_progress

# Logit post-processing some architectures apply after the head; the shortcut needs none of it.
LOGIT_SCALING_KEYS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class ScoredText(NamedTuple):
    """Token ids of a context and of the target scored after it."""

    context_ids: list[int]
    target_ids: list[int]


class _Batch(NamedTuple):
    """A left-padded batch and where its target tokens are predicted."""

    rows: list[int]
    inputs: dict[str, Any]
    keep: int
    """The last ``keep`` positions' logits predict every target token of the batch."""
    row_P: torch.Tensor
    col_P: torch.Tensor
    """Row and kept-position index of the logits that predict each target token."""
    token_P: torch.Tensor
    item_P: torch.Tensor
    """Which of ``rows`` (the scored items) each target token belongs to."""

    def logits(self, model: nn.Module, **extra: Any) -> tuple[torch.Tensor, Any]:
        """The logits that predict the target tokens [P, V], and the model's whole output."""
        result = model(**self.inputs, **extra)
        return result.logits[:, -self.keep :][self.row_P, self.col_P], result

    def sums(self, logits_PV: torch.Tensor) -> np.ndarray:
        """Sum of the target tokens' log-probabilities per row [B]."""
        logp_P = logits_PV.float().log_softmax(-1).gather(1, self.token_P[:, None])[:, 0]
        total = torch.zeros(len(self.rows), dtype=torch.float64, device=logp_P.device)
        return total.index_add_(0, self.item_P, logp_P.double()).cpu().numpy()


def _batches(
    model: nn.Module, items: Sequence[ScoredText], batch_size: int, pad_id: int
) -> list[_Batch]:
    """Items longest first, left-padded, positions counted from each row's first real token
    (as in :func:`ssae_core.lm.embed.last_token_states`); batches without target tokens are
    left out."""
    device = next(model.parameters()).device
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]) - len(items[i][1]))
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        targets = [items[i].target_ids for i in rows]
        keep = max(len(t) for t in targets) + 1
        if keep == 1:
            continue
        ids_BT, mask_BT = left_pad([items[i][0] + items[i][1] for i in rows], pad_id)
        ids_BT, mask_BT = ids_BT.to(device), mask_BT.to(device)
        inputs = {
            "input_ids": ids_BT,
            "attention_mask": mask_BT,
            "position_ids": (mask_BT.cumsum(-1) - 1).clamp(min=0),
            "use_cache": False,
        }
        if keep_arg:
            inputs["logits_to_keep"] = keep
        # kept position p predicts token p + 1: target j of a row with n targets is predicted
        # at kept position keep - n + j - 1
        row_P = torch.tensor([b for b, t in enumerate(targets) for _ in t], device=device)
        out.append(
            _Batch(
                rows=rows,
                inputs=inputs,
                keep=keep,
                row_P=row_P,
                col_P=torch.tensor(
                    [keep - len(t) + j - 1 for t in targets for j in range(len(t))], device=device
                ),
                token_P=torch.tensor([x for t in targets for x in t], device=device),
                item_P=row_P,
            )
        )
    return out


class _Packed(NamedTuple):
    """One packed row: a context, then targets (each without its last token, which nothing
    reads); a target's tokens attend to the context and to their own earlier tokens only."""

    ids: list[int]
    segment: list[int]
    """0 for the context, k + 1 for the k-th target's tokens."""
    position: list[int]
    """Position ids: targets restart right after the context."""
    items: list[int]
    targets: list[list[int]]
    predicted_at: list[list[int]]
    """Per target: the row positions whose logits predict its tokens."""


def _pack(context: Sequence[int], group: Sequence[tuple[int, list[int]]]) -> _Packed:
    """``context`` followed by ``group``'s targets (``(item, target ids)``, non-empty)."""
    ids, segment, position = list(context), [0] * len(context), list(range(len(context)))
    predicted_at = []
    for k, (_, target) in enumerate(group):
        start = len(ids)
        ids += target[:-1]
        segment += [k + 1] * (len(target) - 1)
        position += range(len(context), len(context) + len(target) - 1)
        predicted_at.append([len(context) - 1, *range(start, start + len(target) - 1)])
    return _Packed(
        ids, segment, position, [i for i, _ in group], [t for _, t in group], predicted_at
    )


def _packed_rows(items: Sequence[ScoredText], per_row: int) -> list[_Packed]:
    """Items with a target grouped by context (at most ``per_row`` targets a row), longest rows
    first."""
    by_context: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, item in enumerate(items):
        if item.target_ids:
            by_context.setdefault(tuple(item.context_ids), []).append((i, list(item.target_ids)))
    rows = [
        _pack(context, group[start : start + per_row])
        for context, group in by_context.items()
        for start in range(0, len(group), per_row)
    ]
    return sorted(rows, key=lambda row: -len(row.ids))


def _tree_mask(rows: Sequence[_Packed], width: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask [B, 1, T, T] of left-padded packed rows (:class:`_Packed`); a
    padding position attends to itself only."""
    allowed_BTT = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)
    causal_TT = torch.ones(width, width, dtype=torch.bool).tril()
    for b, row in enumerate(rows):
        n, seg_T = len(row.ids), torch.tensor(row.segment)
        same_TT = (seg_T[:, None] == seg_T[None, :]) | (seg_T[None, :] == 0)
        allowed_BTT[b, width - n :, width - n :] = same_TT & causal_TT[:n, :n]
    mask_BTT = torch.zeros(allowed_BTT.shape, dtype=dtype)
    return mask_BTT.masked_fill_(~allowed_BTT, torch.finfo(dtype).min)[:, None]


def _packed_batch(model: nn.Module, rows: Sequence[_Packed], pad_id: int) -> _Batch:
    """One left-padded batch of packed rows under their tree mask (:func:`_tree_mask`)."""
    weight = next(model.parameters())
    ids_BT, _ = left_pad([row.ids for row in rows], pad_id)
    width = ids_BT.shape[1]
    position_BT = torch.zeros_like(ids_BT)
    for b, row in enumerate(rows):
        position_BT[b, width - len(row.ids) :] = torch.tensor(row.position)
    keep = max(len(row.ids) - at[0] for row in rows for at in row.predicted_at)
    row_P: list[int] = []
    col_P: list[int] = []
    item_P: list[int] = []
    scored = [
        (b, len(row.ids), at)
        for b, row in enumerate(rows)
        for at in row.predicted_at  # one per target, in the order of ``rows``' items
    ]
    for item, (b, n, at) in enumerate(scored):
        item_P += [item] * len(at)
        row_P += [b] * len(at)
        col_P += [keep - n + p for p in at]
    inputs = {
        "input_ids": ids_BT.to(weight.device),
        "attention_mask": _tree_mask(rows, width, weight.dtype).to(weight.device),
        "position_ids": position_BT.to(weight.device),
        "use_cache": False,
    }
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        inputs["logits_to_keep"] = keep

    def tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, device=weight.device)

    return _Batch(
        rows=[i for row in rows for i in row.items],
        inputs=inputs,
        keep=keep,
        row_P=tensor(row_P),
        col_P=tensor(col_P),
        token_P=tensor([x for row in rows for t in row.targets for x in t]),
        item_P=tensor(item_P),
    )


def _packed_batches(
    model: nn.Module, items: Sequence[ScoredText], batch_size: int, pad_id: int
) -> list[_Batch]:
    """Items packed by context (:func:`_packed_rows`), at most ``batch_size`` targets a batch."""
    batches: list[list[_Packed]] = []
    count = batch_size
    for row in _packed_rows(items, batch_size):
        if count + len(row.items) > batch_size:
            batches.append([])
            count = 0
        batches[-1].append(row)
        count += len(row.items)
    return [_packed_batch(model, rows, pad_id) for rows in batches]


def _head_shifts(
    model: nn.Module, vectors: Sequence[SteeringVector | None], batch: _Batch
) -> torch.Tensor | None:
    """What each final-layer vector adds to the logits, ``head(v) - head(0)`` [C, V] (float32);
    None unless the model's logits on ``batch`` are its linear head applied to its last hidden
    state (the final-norm output), which makes ``logits + head(v) - head(0)`` exact."""
    config = text_config(model.config)
    head = model.get_output_embeddings()
    scaled = any(getattr(config, key, None) not in (None, 1, 1.0) for key in LOGIT_SCALING_KEYS)
    if scaled or not isinstance(head, nn.Linear):
        return None
    logits_PV, result = batch.logits(model, output_hidden_states=True)
    state_PD = result.hidden_states[-1][:, -batch.keep :][batch.row_P, batch.col_P]
    tolerance = 1e-4 * max(1.0, float(logits_PV.abs().max()))
    if not torch.allclose(head(state_PD).float(), logits_PV.float(), rtol=1e-4, atol=tolerance):
        return None
    zero = torch.zeros(1, head.in_features, dtype=head.weight.dtype, device=head.weight.device)
    shifts = [
        torch.zeros(head.out_features, device=head.weight.device)
        if vector is None
        else (head(vector.layer_activations[None].to(zero)[None]) - head(zero))[0].float()
        for vector in vectors
    ]
    return torch.stack(shifts)


# attention implementations that take a custom 4D additive mask (the packed rows need one)
MASKED_ATTENTION = ("sdpa", "eager")


@torch.inference_mode()
def target_logprobs(
    model: nn.Module,
    items: Sequence[ScoredText],
    vectors: Sequence[SteeringVector | None] = (None,),
    *,
    pad_id: int,
    batch_size: int = 16,
    shortcut: bool = True,
    share_contexts: bool = True,
    progress: bool = False,
    desc: str = "score",
) -> np.ndarray:
    """Sum of log p(target tokens | context) of every item under every steering condition,
    float64 [C, N] (C = ``len(vectors)``; ``None`` is the unsteered model; an empty target
    scores 0). Every position is steered; batches are left-padded (see :func:`_batches`).

    ``share_contexts``: identical items are scored once, and items with the same context are
    packed into one row (:func:`_packed_rows`; at most ``batch_size`` targets a batch), which
    computes the same sums (to float rounding) with fewer tokens; it needs an attention that
    takes a 4D mask (:data:`MASKED_ATTENTION`), else the items are batched one per row.

    ``shortcut``: when every vector steers the final-norm output, run the model once per batch
    and add ``W_head @ v`` to its logits per condition; it is exact when the logits are the
    linear head of the final-norm output, which is checked on the first batch. When every vector
    steers one and the same block L, blocks 0..L run once per batch (unsteered, so the same in
    every condition) and each condition replays their outputs and runs only the blocks after
    L. Otherwise every condition runs the model under :func:`~ssae_core.lm.steer.steer`.
    """
    for i, item in enumerate(items):
        if not item.context_ids:
            raise InputError(f"text {i}: has an empty context; give at least one context token")
    options = {"shortcut": shortcut, "progress": progress, "desc": desc}
    if not share_contexts:
        batches = _batches(model, items, batch_size, pad_id)
        return _score_batches(model, batches, vectors, len(items), **options)
    keys = [(tuple(item.context_ids), tuple(item.target_ids)) for item in items]
    unique = {key: u for u, key in enumerate(dict.fromkeys(keys))}
    texts = [ScoredText(list(context), list(target)) for context, target in unique]
    if getattr(model.config, "_attn_implementation", None) in MASKED_ATTENTION:
        batches = _packed_batches(model, texts, batch_size, pad_id)
    else:
        batches = _batches(model, texts, batch_size, pad_id)
    scores_CU = _score_batches(model, batches, vectors, len(texts), **options)
    return scores_CU[:, [unique[key] for key in keys]]


def _score_batches(
    model: nn.Module,
    batches: Sequence[_Batch],
    vectors: Sequence[SteeringVector | None],
    n_items: int,
    *,
    shortcut: bool,
    progress: bool,
    desc: str,
) -> np.ndarray:
    """The summed target log-probabilities [C, n_items] of the items in ``batches`` (items
    in no batch score 0), by the ways :func:`target_logprobs` describes."""
    out_CN = np.zeros((len(vectors), n_items))
    shifts_CV = None
    final_only = all(v is None or set(v.layer_activations) == {None} for v in vectors)
    if shortcut and batches and final_only and any(v is not None for v in vectors):
        shifts_CV = _head_shifts(model, vectors, batches[0])
    block = _one_block(model, vectors) if shifts_CV is None else None
    passes = 1 if shifts_CV is not None else len(vectors)
    with show_progress(
        total=len(batches) * passes, desc=desc, unit="batch", disable=not progress
    ) as bar:
        for batch in batches:
            if shifts_CV is not None:
                base_PV = batch.logits(model)[0].float()
                for c in range(len(vectors)):
                    out_CN[c, batch.rows] = batch.sums(base_PV + shifts_CV[c])
                bar.update(1)
                continue
            if shortcut and block is not None:
                with _recorded_blocks(model, block) as outputs:
                    base_PV = batch.logits(model)[0]
                for c, vector in enumerate(vectors):
                    if vector is None:
                        out_CN[c, batch.rows] = batch.sums(base_PV)
                        continue
                    with _replayed_blocks(model, outputs), steer(model, vector):
                        out_CN[c, batch.rows] = batch.sums(batch.logits(model)[0])
                bar.update(len(vectors))
                continue
            for c, vector in enumerate(vectors):
                steering = steer(model, vector) if vector is not None else contextlib.nullcontext()
                with steering:
                    out_CN[c, batch.rows] = batch.sums(batch.logits(model)[0])
                bar.update(1)
    return out_CN


def _one_block(model: nn.Module, vectors: Sequence[SteeringVector | None]) -> int | None:
    """The block index every vector acts at, when they all act at one and the same block (so
    the blocks up to it run unsteered and can be shared); else None."""
    layers = {
        resolve_layer(k, num_layers(model.config))
        for v in vectors
        if v is not None
        for k in v.layer_activations
    }
    return layers.pop() if len(layers) == 1 and None not in layers else None


@contextlib.contextmanager
def _recorded_blocks(model: nn.Module, last: int) -> Iterator[list[Any]]:
    """Record the outputs of blocks 0..``last`` during the ``with`` body's forward pass."""
    outputs: list[Any] = []
    blocks = decoder_blocks(model)[: last + 1]
    handles = [b.register_forward_hook(lambda m, a, out: outputs.append(out)) for b in blocks]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _replayed_blocks(model: nn.Module, outputs: Sequence[Any]) -> Iterator[None]:
    """Blocks 0..len(outputs)-1 return their recorded outputs instead of computing them (they
    are unsteered, so identical in every condition); hooks on them still run (steering at the
    last one adds to the replayed state)."""
    blocks = decoder_blocks(model)[: len(outputs)]
    try:
        for block, output in zip(blocks, outputs, strict=True):
            block.forward = lambda *args, _out=output, **kwargs: _out
        yield
    finally:
        for block in blocks:
            del block.forward


def perplexity(logprob_N: np.ndarray, count_N: np.ndarray) -> float | None:
    """exp(- sum of log-probs / number of tokens) over all texts; None without tokens."""
    tokens = int(np.sum(count_N))
    return float(math.exp(-float(np.sum(logprob_N)) / tokens)) if tokens else None
