"""Loading rules and chat formatting of causal LMs."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoTokenizer

from tests.training.engine.toy_model import build_toy_model
from training.engine.lm import (
    PAD_TOKEN,
    check_safetensors_weights,
    format_prompt,
    load_causal_lm,
    load_tokenizer,
)

CPU = torch.device("cpu")


def test_a_tokenizer_whose_pad_is_eos_gets_a_distinct_pad(toy_model_dir, tmp_path):
    model_dir = tmp_path / "pad-is-eos"
    shutil.copytree(toy_model_dir, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(model_dir)

    tokenizer = load_tokenizer(model_dir)
    assert tokenizer.pad_token == PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_a_tokenizer_without_pad_gets_one_and_the_embeddings_grow(tmp_path):
    model_dir = build_toy_model(tmp_path / "no-pad", with_pad=False)
    before = len(AutoTokenizer.from_pretrained(model_dir))

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, tokenizer, CPU)
    assert len(tokenizer) == before + 1
    assert tokenizer.pad_token_id == before
    assert model.get_input_embeddings().num_embeddings == before + 1
    assert model.get_output_embeddings().weight.shape[0] == before + 1
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_a_model_dir_with_only_pickle_weights_is_refused(toy_model_dir, tmp_path):
    model_dir = tmp_path / "pickled"
    shutil.copytree(toy_model_dir, model_dir)
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ValueError, match="pickle weights"):
        check_safetensors_weights(model_dir)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        load_causal_lm(model_dir, load_tokenizer(model_dir), CPU)


def test_plain_prompt_format_is_used_without_a_chat_template(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    assert not tokenizer.chat_template
    assert format_prompt(tokenizer, "Why?") == "User: Why?\nAssistant: "
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert format_prompt(tokenizer, messages) == "System: Be brief.\nUser: Hi\nAssistant: "


def test_the_chat_template_is_used_when_the_tokenizer_has_one(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert format_prompt(tokenizer, "Why?") == "<user>Why?<assistant>"
