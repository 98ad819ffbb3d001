"""Texts to token ids and back: prompt templates, the BOS prefix, left-padded batches, greedy
completion.

Every place that tokenises for the LM (extraction, steering, behavioural scoring) goes through
:func:`tokenize`, so a template or special-token rule is applied the same way everywhere.

The BOS rule (:func:`prefix_token_ids`, setting ``bos``): a text is read after the tokenizer's
BOS token. Some tokenizers do not add it (SmolLM2's has ``add_bos_token=False``), and a text of one
token is then read at position 0, the attention-sink position, whose state is an outlier (norms
about 100 times the others in SmolLM2's middle blocks). ``auto`` (the default) prepends BOS when the
tokenizer defines one and neither the tokenizer nor the chat template already writes it; ``true``
does the same but refuses a tokenizer without BOS; ``false`` prepends nothing (the tokenizer's own
special tokens stay as they are). A BOS is never doubled.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ssae_core.errors import InputError

CHAT_TEMPLATE = "chat"
TEXT_FIELD = "{text}"
BOS_SETTINGS = ("auto", "true", "false")
MAX_NEW_TOKENS = 4096
"""Most tokens one continuation may generate (more than any model here has positions for)."""
_PROBE = "a"  # a text any tokenizer splits into ordinary tokens


def check_template(template: str | None) -> None:
    if template is not None and template != CHAT_TEMPLATE and TEXT_FIELD not in template:
        raise InputError(
            f"template {template!r}: must contain {TEXT_FIELD}, be '{CHAT_TEMPLATE}', or be omitted"
        )


def parse_bos(bos: object) -> str:
    """A ``bos`` setting as ``auto``, ``true`` or ``false`` (YAML booleans accepted)."""
    if isinstance(bos, bool):
        return "true" if bos else "false"
    if isinstance(bos, str) and bos.strip().lower() in BOS_SETTINGS:
        return bos.strip().lower()
    raise InputError(f"bos {bos!r}: use auto, true or false")


def _starts_with_bos(tokenizer: Any, template: str | None) -> bool:
    """Whether a probe text's ids already begin with BOS (added by the tokenizer or written by
    the chat template)."""
    prompt = format_prompt(_PROBE, template, tokenizer)
    ids = tokenizer(prompt, add_special_tokens=template != CHAT_TEMPLATE)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def prefix_token_ids(
    tokenizer: Any, bos: object = "auto", template: str | None = None
) -> list[int]:
    """The token ids put before every text's own ids: ``[BOS]`` or ``[]`` (module docstring)."""
    setting = parse_bos(bos)
    if setting == "false":
        return []
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        if setting == "true":
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise InputError(
                f"bos true: tokenizer {name} defines no BOS token; use bos auto or false"
            )
        return []
    return [] if _starts_with_bos(tokenizer, template) else [int(bos_id)]


def format_prompt(text: str, template: str | None, tokenizer: Any = None) -> str:
    """The text the model reads: ``template`` with ``{text}`` replaced (other braces stay)."""
    if template is None:
        return text
    if template == CHAT_TEMPLATE:
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise InputError(
                f"template chat: tokenizer {name} has no chat template; give a template with "
                f"{TEXT_FIELD}, or none"
            )
        messages = [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return template.replace(TEXT_FIELD, text)


def tokenize(
    tokenizer: Any, texts: Sequence[str], *, template: str | None = None, bos: object = "auto"
) -> list[list[int]]:
    """Token ids of each prompt: :func:`prefix_token_ids`, then the prompt's ids with the
    tokenizer's default special tokens (a chat template already writes its own)."""
    prompts = [format_prompt(t, template, tokenizer) for t in texts]
    if not prompts:
        return []
    prefix = prefix_token_ids(tokenizer, bos, template)
    encoded = tokenizer(prompts, add_special_tokens=template != CHAT_TEMPLATE)
    return [prefix + list(ids) for ids in encoded["input_ids"]]


def left_pad(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists as a left-padded batch: input ids [B, T] and attention mask [B, T]."""
    width = max(len(ids) for ids in batch)
    input_ids_BT = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        if ids:
            input_ids_BT[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask_BT[row, width - len(ids) :] = 1
    return input_ids_BT, mask_BT


def pad_token_id(tokenizer: Any) -> int:
    """The id to left-pad with: pad, else EOS, else UNK (padding is masked, so any id works)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0  # masked out, so any id will do


def complete(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 20,
    template: str | None = None,
    bos: object = "auto",
    batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only), batched with left padding; the
    prompts are tokenised by :func:`tokenize` (same template and BOS rule as extraction).

    Run it inside :func:`steer` to get steered continuations.
    """
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens {max_new_tokens}: must be in [1, {MAX_NEW_TOKENS}]")
    ids = tokenize(tokenizer, list(prompts), template=template, bos=bos)
    for prompt, row in zip(prompts, ids, strict=True):
        if not row:
            raise InputError(f"prompt {prompt!r}: has no tokens; give some text")
    pad = pad_token_id(tokenizer)
    settings = copy.deepcopy(model.generation_config)
    for key in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        if hasattr(settings, key):
            setattr(settings, key, None)
    settings.do_sample = False
    settings.num_beams = 1
    settings.max_new_tokens = max_new_tokens
    settings.max_length = None
    settings.pad_token_id = pad
    device = next(model.parameters()).device
    texts: list[str] = []
    for start in range(0, len(ids), batch_size):
        input_ids_BT, mask_BT = left_pad(ids[start : start + batch_size], pad)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids_BT.to(device),
                attention_mask=mask_BT.to(device),
                generation_config=settings,
            )
        new = out[:, input_ids_BT.shape[1] :].cpu()
        texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return texts
