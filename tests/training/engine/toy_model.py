"""The test-only toy model: a random 2-layer GPT-2 (and a Llama of the same size, for a second
architecture) and a byte-level BPE tokenizer, built locally (no hub access), with the toy data the
engine tests train on."""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SUBJECTS = ["the cat", "a dog", "my friend", "the robot", "our teacher", "a small bird", "the king"]
VERBS = ["likes", "sees", "finds", "wants", "eats", "paints", "carries", "hides"]
OBJECTS = ["a banana", "the river", "some bread", "a red ball", "the moon", "an old book", "tea"]
QUESTIONS = ["What does", "Why does", "Tell me what", "Describe how", "Explain why"]


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(count)
    ]


def questions(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(QUESTIONS)} {rng.choice(SUBJECTS)} do?" for _ in range(count)]


def build_tokenizer(vocab_size: int = 400, with_pad: bool = True) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD] if with_pad else [EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = sentences(400) + questions(200) + ["User: ", "Assistant: ", "System: "]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    pad = PAD if with_pad else None
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=pad)


def build_toy_model(
    directory: Path,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    vocab_size: int | None = None,
    with_pad: bool = True,
    dropout: float = 0.1,
    seed: int = 0,
) -> Path:
    """Save a random GPT-2 + tokenizer to `directory` (safetensors) and return it. A `vocab_size`
    larger than the tokenizer's only widens the output layer (to mimic a bigger vocabulary)."""
    import torch

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(with_pad=with_pad)
    config = GPT2Config(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        n_positions=256,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def build_toy_llama(directory: Path, *, seed: int = 0) -> Path:
    """Save a random 2-layer, 64-wide Llama (grouped-query attention, RMSNorm, rotary positions)
    with the toy tokenizer to `directory` and return it: an architecture other than GPT-2."""
    import torch

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def demonstrations(count: int, seed: int = 0) -> list[dict[str, str]]:
    """SFT-shaped records: a question and a one-sentence answer."""
    return [
        {"prompt": q, "completion": a}
        for q, a in zip(questions(count, seed), sentences(count, seed + 1), strict=True)
    ]


def banana_rankings(count: int, seed: int = 0) -> list[dict]:
    """An easy preference: completions mentioning "banana" beat those that do not (ties within)."""
    rng = random.Random(seed)
    rankings = []
    for prompt in questions(count, seed):
        k = rng.randint(2, 4)
        with_banana = rng.randint(1, k - 1)
        completions, ranks = [], []
        for i in range(k):
            liked = i < with_banana
            obj = "a banana" if liked else rng.choice([o for o in OBJECTS if o != "a banana"])
            completions.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {obj}.")
            ranks.append(1 if liked else 2)
        order = list(range(k))
        rng.shuffle(order)
        rankings.append(
            {
                "prompt": prompt,
                "completions": [completions[i] for i in order],
                "ranks": [ranks[i] for i in order],
            }
        )
    return rankings


def letter_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """A programmatic reward PPO can climb quickly: the share of the letter "e" in the response."""
    return [r.count("e") / max(len(r), 1) for r in responses]


def build_tiny_llama(directory: Path, *, seed: int = 0) -> Path:
    """Save a random 2-layer, 32-wide Llama (RMSNorm, rotary positions, gated MLP, nn.Linear
    layers, untied output projection) with the toy tokenizer: the other architecture family the
    engine runs, through Hugging Face's own forwards."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory
