"""Shared fixtures: a tiny random Llama and its tokenizer, saved to a folder, built offline."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_VOCABULARY = (
    "the a an of and to in is was on at it for with as by this that he she they king queen man "
    "woman boy girl father mother son daughter actor actress waiter waitress cat dog house table "
    "chair lamp door window le la un une chat chien maison roi reine homme femme red blue green "
    "small big round square cube ball box true false yes no answer question what who where why ."
)


def build_tiny_tokenizer(
    *, adds_bos: bool = True, bos: bool = True, chat_template: str | None = None
):
    """A word-level tokenizer (other words -> <unk>) without a pad token that adds BOS (unless
    ``adds_bos`` is false, like SmolLM2's), defines none (``bos`` false), and may carry a chat
    template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    vocab = {
        token: i for i, token in enumerate(specials + list(dict.fromkeys(TINY_VOCABULARY.split())))
    }
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos and bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="</s>",
        **({"bos_token": "<s>"} if bos else {}),
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llama(vocab_size: int, *, layers: int = 3, seed: int = 0, max_positions: int = 64):
    """A random Llama with ``layers`` blocks of width 48 (init std 0.2, so states are not tiny)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    config.initializer_range = 0.2
    return LlamaForCausalLM(config).eval()


TINY_CHAT_TEMPLATE = "{% for m in messages %}question {{ m['content'] }}{% endfor %} answer"


@pytest.fixture(scope="session")
def no_bos_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of ``tiny_lm_dir`` with a tokenizer that, like SmolLM2's, defines BOS but
    does not add it, and has a chat template (``TINY_CHAT_TEMPLATE``)."""
    folder = tmp_path_factory.mktemp("no_bos_lm")
    tokenizer = build_tiny_tokenizer(adds_bos=False, chat_template=TINY_CHAT_TEMPLATE)
    build_tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny random Llama (3 blocks, d=48) and a word-level tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder (data, a run, codes, files of their own), built once; tests use copies."""
    from tests.helpers import build_workspace

    return build_workspace(tmp_path_factory.mktemp("workspace") / "ws")


@pytest.fixture()
def ws(workspace_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the workspace template, made the current folder."""
    from tests.helpers import copy_workspace

    return copy_workspace(workspace_template, tmp_path / "ws", monkeypatch)
