"""Bringing a customer's model in (training/engine/model_files.py): a good directory is copied and
described; each bad one is refused with its reason and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tests.training.engine.toy_model import build_tokenizer, build_toy_model
from training.engine import model_files
from training.engine.model_files import ModelRejected, import_model

TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return build_toy_model(tmp_path / "source", dropout=0.0)


def test_a_directory_is_copied_and_described(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "training_args.bin").write_bytes(b"pickle")  # left out of the copy
    info = import_model(
        "directory", str(model_dir), tmp_path / "target", default_chat_template=TEMPLATE
    )
    config = AutoConfig.from_pretrained(model_dir)
    weights = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    assert info["architecture"] == "GPT2LMHeadModel"
    assert info["model_type"] == "gpt2" == config.model_type
    assert info["parameters"] == weights
    assert info["dtype"] == "float32"
    assert info["chat_template"] == "default"  # the toy tokenizer has none: the stated one is kept
    assert info["pad_token"] == "model"
    assert info["size_bytes"] > 4 * weights
    target = tmp_path / "target"
    assert (target / "model.safetensors").is_file()
    assert not (target / "training_args.bin").exists()
    assert (
        "chat_template" in json.loads((target / "tokenizer_config.json").read_text())
        or (target / "chat_template.jinja").is_file()
    )


def test_a_llama_with_tied_embeddings_and_its_own_template_is_accepted(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    tokenizer.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    source = tmp_path / "llama"
    LlamaForCausalLM(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    info = import_model("directory", str(source), tmp_path / "target")
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["chat_template"] == "model"
    embeddings = len(tokenizer) * 32
    assert info["parameters"] == sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert info["parameters"] > embeddings


def _refused(tmp_path: Path, source: Path, reason: str, **kwargs) -> None:
    target = tmp_path / "target"
    with pytest.raises(ModelRejected, match=reason):
        import_model("directory", str(source), target, **kwargs)
    assert not target.exists(), "a refused model leaves nothing behind"


def test_pickle_only_weights_are_refused(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, model_dir / "pytorch_model.bin")
    _refused(tmp_path, model_dir, "pickle weights")


def test_remote_code_is_refused(model_dir: Path, tmp_path: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(config))
    _refused(tmp_path, model_dir, "remote code", default_chat_template=TEMPLATE)


def test_a_missing_tokenizer_is_refused(model_dir: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model_dir / name).unlink(missing_ok=True)
    _refused(tmp_path, model_dir, "tokenizer", default_chat_template=TEMPLATE)


def test_a_corrupt_weight_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json!!")
    _refused(tmp_path, model_dir, "not a readable safetensors", default_chat_template=TEMPLATE)


def test_a_truncated_weight_file_is_refused(model_dir: Path, tmp_path: Path) -> None:
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _refused(
        tmp_path,
        model_dir,
        "not a readable safetensors.*not fully covered",
        default_chat_template=TEMPLATE,
    )


def test_weights_that_do_not_match_the_config_are_refused(model_dir: Path, tmp_path: Path) -> None:
    other = build_toy_model(tmp_path / "wider", n_embd=32, dropout=0.0)
    shutil.copy(other / "model.safetensors", model_dir / "model.safetensors")
    _refused(tmp_path, model_dir, "do not match the config", default_chat_template=TEMPLATE)


def test_no_chat_template_and_none_stated_is_refused(model_dir: Path, tmp_path: Path) -> None:
    _refused(tmp_path, model_dir, "no chat template")


def test_a_stated_template_that_does_not_render_is_refused(model_dir: Path, tmp_path: Path) -> None:
    _refused(
        tmp_path, model_dir, "does not render", default_chat_template="{{ messages[0]['x'](1) }}"
    )


def test_a_config_without_a_causal_lm_is_refused(model_dir: Path, tmp_path: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "bert"
    (model_dir / "config.json").write_text(json.dumps(config))
    _refused(tmp_path, model_dir, "no causal LM|do not match", default_chat_template=TEMPLATE)


def test_a_hub_name_offline_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    target = tmp_path / "target"
    with pytest.raises(ModelRejected, match="could not be reached"):
        import_model("hub", "HuggingFaceTB/no-such-model-here", target)
    assert not target.exists()


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF but not really")
    target = tmp_path / "target"
    with pytest.raises(ModelRejected, match="could not be read as a GGUF"):
        import_model("gguf", str(fake), target)
    assert not target.exists()


def test_the_kept_suffixes_leave_out_pickles() -> None:
    assert not any(suffix in model_files.KEPT_SUFFIXES for suffix in (".bin", ".pt", ".pkl"))


def test_a_quantised_checkpoint_is_refused(model_dir: Path, tmp_path: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (model_dir / "config.json").write_text(json.dumps(config))
    _refused(tmp_path, model_dir, "quantised \\(gptq\\)", default_chat_template=TEMPLATE)
