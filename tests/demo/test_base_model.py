import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.demo import base_model
from training.demo.families import gold_response, sample_prompts

REPO_ROOT = Path(__file__).resolve().parents[2]

# The first run in a checkout builds the base model (minutes on 2 cores); later runs reuse it.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def model_dir() -> Path:
    # One build per checkout, reused across tests and runs (var/ is git-ignored).
    return base_model.ensure_tiny_model(REPO_ROOT / "var" / "models" / "tiny-base")


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def test_the_model_is_saved_as_safetensors_and_never_pickled(model_dir):
    names = {p.name for p in model_dir.iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


def test_build_info_records_how_the_model_was_built(model_dir):
    info = json.loads((model_dir / "build_info.json").read_text())
    assert info["builder_hash"] == base_model.builder_hash()
    assert info["config"]["seed"] == 0
    assert info["train_steps"] == info["config"]["train_steps"]
    assert not info["stopped_at_time_cap"]
    assert info["final_loss"] < 2.0
    assert set(info["phase_seconds"]) == {"corpus", "tokenizer", "encode", "train", "save"}


def test_the_model_has_the_benchmark_shape(model):
    config = model.config
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (4, 128, 4, 256)
    assert config.model_type == "gpt2"


def test_pad_and_eos_are_distinct_tokens(tokenizer, model):
    assert tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert len(tokenizer) == model.config.vocab_size
    assert 1500 <= len(tokenizer) <= 4096


def test_chat_template_prompt_plus_response_and_eos_renders_the_full_dialogue(tokenizer):
    history = [
        {"role": "user", "content": "List three fruits."},
        {"role": "assistant", "content": "apple, pear, plum"},
        {"role": "user", "content": "Spell cat backwards."},
    ]
    prompt = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*history, {"role": "assistant", "content": "tac"}], tokenize=False
    )
    assert prompt == base_model.render_chat(history, add_generation_prompt=True)
    assert full == prompt + "tac" + tokenizer.eos_token
    assert prompt.endswith("<|assistant|>\n")
    assert prompt.count(tokenizer.eos_token) == 1  # the first assistant turn is closed


def test_chat_template_rejects_unknown_roles(tokenizer):
    with pytest.raises(Exception, match="unknown role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_prompt_tokens_are_a_prefix_of_prompt_plus_response_tokens(tokenizer):
    messages = [{"role": "user", "content": "Count from 3 to 7."}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + "3, 4, 5, 6, 7" + tokenizer.eos_token, add_special_tokens=False)
    assert full_ids["input_ids"][: len(prompt_ids)] == prompt_ids
    assert full_ids["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(full_ids["input_ids"]) == prompt + "3, 4, 5, 6, 7<|endoftext|>"


def test_generation_produces_decodable_text(model_dir, model):
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in ("Write a sentence about a dog.", "What is 3 plus 4?")
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    output = model.generate(**batch, do_sample=True, max_new_tokens=20)
    new_tokens = output[:, batch["input_ids"].shape[1] :]  # (batch, new)
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    assert len(texts) == 2
    assert all(any(ch.isalpha() or ch.isdigit() for ch in t) for t in texts)


def test_greedy_answers_to_training_prompts_look_like_answers(model_dir):
    prompts = sample_prompts(16, seed=3, split="train")
    answers = base_model.generate_answers(model_dir, prompts, do_sample=False)
    # The base model has seen these formats: most answers should share a word with the gold one.
    overlap = [
        bool(set(a.lower().split()) & set(gold_response(p).lower().split()))
        for p, a in zip(prompts, answers, strict=True)
    ]
    assert sum(overlap) >= len(prompts) // 2


def test_the_corpus_is_deterministic_and_uses_no_heldout_prompt():
    cfg = base_model.TinyConfig(n_generic_docs=50, n_dialogues=300)
    docs = base_model.build_corpus(cfg)
    assert docs == base_model.build_corpus(cfg)
    assert docs != base_model.build_corpus(
        base_model.TinyConfig(seed=1, n_generic_docs=50, n_dialogues=300)
    )
    assert all(d.endswith(base_model.EOS) for d in docs)
    heldout = sample_prompts(200, seed=0, split="heldout")
    assert not [p for p in heldout if any(f"<|user|>\n{p}\n" in d for d in docs)]


def test_a_stale_build_is_replaced_and_a_fresh_one_reused(tmp_path):
    cfg = base_model.TinyConfig(n_generic_docs=40, n_dialogues=60, train_steps=2, batch_size=2)
    out = tmp_path / "m"
    base_model.ensure_tiny_model(out, cfg=cfg)
    first = (out / "model.safetensors").stat().st_mtime_ns
    base_model.ensure_tiny_model(out, cfg=cfg)
    assert (out / "model.safetensors").stat().st_mtime_ns == first

    info = json.loads((out / "build_info.json").read_text())
    info["builder_hash"] = "stale"
    (out / "build_info.json").write_text(json.dumps(info))
    base_model.ensure_tiny_model(out, cfg=cfg)
    assert (
        json.loads((out / "build_info.json").read_text())["builder_hash"]
        == base_model.builder_hash()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]  # no temp dirs left


def test_a_directory_that_is_not_a_build_is_never_replaced(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        base_model.ensure_tiny_model(
            tmp_path / "m", cfg=base_model.TinyConfig(n_dialogues=10, train_steps=1)
        )
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def test_the_build_is_deterministic_given_the_seed(tmp_path):
    cfg = base_model.TinyConfig(n_generic_docs=100, n_dialogues=200, train_steps=3, batch_size=2)
    base_model.build(tmp_path / "a", cfg, log=lambda line: None)
    base_model.build(tmp_path / "b", cfg, log=lambda line: None)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# Issue 18: the first start builds this model in the background; pages show how far it is.


def _threads_while_training(out, cfg) -> set[int]:
    seen: set[int] = set()

    def tell(phase, step, eta):  # called from inside the training loop
        if phase == "train" and step > 0:
            seen.add(torch.get_num_threads())

    base_model.build(out, cfg, log=lambda line: None, tell=tell)
    return seen


def test_the_build_trains_on_one_thread_unless_told(tmp_path, monkeypatch):
    cfg = base_model.TinyConfig(n_generic_docs=20, n_dialogues=30, train_steps=10, batch_size=2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("INSTRUCTLOOP_BUILD_THREADS", raising=False)
    assert _threads_while_training(tmp_path / "a", cfg) == {1}
    monkeypatch.setenv("INSTRUCTLOOP_BUILD_THREADS", "2")
    assert _threads_while_training(tmp_path / "b", cfg) == {2}


def test_the_build_reports_each_phase_and_an_eta_then_clears_its_report(tmp_path):
    from training.demo import build_progress

    cfg = base_model.TinyConfig(n_generic_docs=20, n_dialogues=30, train_steps=20, batch_size=2)
    out = tmp_path / "m"
    seen: list[tuple[str, int, bool]] = []

    def log(line):  # the builder logs after each phase: read what a page would read then
        read = build_progress.progress_read(out)
        seen.append((read.phase, read.step, read.eta_seconds is not None))

    base_model.build_atomically(out, cfg, log=log)
    phases = list(dict.fromkeys(phase for phase, _, _ in seen))
    assert phases == ["corpus", "tokenizer", "encode", "train", "save"]
    assert ("train", 20, True) in seen
    assert not build_progress.progress_path(out).exists()  # done: nothing left to report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_build_stopped_with_term_leaves_neither_its_report_nor_a_half_model(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from training.demo import build_progress

    out = tmp_path / "tiny-base"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    builder = subprocess.Popen(
        [sys.executable, "-m", "training.demo.base_model", "--out", str(out), "--steps",
         "100000", "--report", "0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while (p := build_progress.progress_read(out)) is None or p.phase != "train":
            assert time.monotonic() < deadline and builder.poll() is None, "never trained"
            time.sleep(0.2)
        builder.send_signal(signal.SIGTERM)  # what ./dev up's Ctrl+C sends it
        assert builder.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        builder.kill()
        builder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny-base.lock"]
