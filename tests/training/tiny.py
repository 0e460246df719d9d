"""A tiny random GPT-2 and a byte-level BPE tokenizer, built locally (no hub access)."""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

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


def build_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = sentences(400) + questions(200) + ["User: ", "Assistant: ", "System: "]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)


def build_tiny_model(
    directory: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 2, seed: int = 0
) -> Path:
    """Save a random GPT-2 + tokenizer to `directory` (safetensors) and return it."""
    import torch

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory
