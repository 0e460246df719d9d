"""The reward model: where it reads a score, sharing a prompt among completions, saving as a
Hugging Face sequence classifier and loading (that and the earlier format)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from tests.training.engine.toy_model import build_toy_llama, build_toy_model
from training.engine.data import collate_rankings, encode_rankings, pad_right
from training.engine.lm import fit_embeddings, load_pretrained, load_tokenizer
from training.engine.reward_model import RewardModel, last_real_index

CPU = torch.device("cpu")


def test_reward_index_is_the_last_real_token_under_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_real_index(mask).tolist() == [2, 4, 0]


def test_reward_index_is_the_last_real_token_under_left_padding_too():
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])  # prompt left-padded, response right
    assert last_real_index(mask).tolist() == [4, 3]


def test_reward_model_scores_a_sequence_the_same_with_or_without_right_padding(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    short = tokenizer("the cat sees the moon.")["input_ids"]
    long = tokenizer("a dog eats some bread and the king carries tea.")["input_ids"]
    pad = tokenizer.pad_token_id
    batch = torch.tensor([short + [pad] * (len(long) - len(short)), long])
    mask = torch.tensor([[1] * len(short) + [0] * (len(long) - len(short)), [1] * len(long)])
    with torch.no_grad():
        together = model(batch, mask)
        alone = model(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
        # Changing a pad token's id must not change the score either.
        batch[0, -1] = 5
        repadded = model(batch, mask)
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together, repadded)


@pytest.fixture(scope="module")
def llama_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_llama(tmp_path_factory.mktemp("toy-llama"))


def right_padded_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + completion + EOS sequences of different lengths, right-padded with the pad token
    (as a reward model is fed).  # (5, longest), (5, longest)"""
    records = [
        {
            "prompt": "What does the cat do?",
            "completions": ["tea.", "a dog eats."],
            "ranks": [1, 2],
        },
        {"prompt": "Hi", "completions": ["the moon.", "a", "the king hides."], "ranks": [3, 2, 1]},
    ]
    full = [r.prompt + c for r in encode_rankings(tokenizer, records, 64) for c in r.completions]
    ids = pad_right(full, tokenizer.pad_token_id)
    mask = pad_right([[1] * len(row) for row in full], 0)
    return ids, mask


@pytest.mark.parametrize(
    ("architecture", "model_dir"),
    [("GPT2ForSequenceClassification", "toy_model_dir"),
     ("LlamaForSequenceClassification", "llama_model_dir")],
)  # fmt: skip
def test_a_saved_reward_model_is_a_hugging_face_sequence_classifier_that_scores_as_ours(
    architecture, model_dir, request, tmp_path
):
    model_dir = request.getfixturevalue(model_dir)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    )
    model = RewardModel.from_causal_lm(model_dir, tokenizer, CPU).eval()
    model.score_offset = 0.25  # kept in the config, outside the logits
    model.save_pretrained(tmp_path / "rm", tokenizer)

    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert classifier.config.architectures == [architecture]
    assert classifier.num_labels == 1 and classifier.score.bias is None
    assert classifier.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert classifier.config.score_offset == 0.25
    assert not classifier.training  # from_pretrained leaves dropout off
    saved_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert saved_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert saved_tokenizer.chat_template == tokenizer.chat_template

    ids, mask = right_padded_batch(tokenizer)
    assert (mask == 0).any()  # some rows are padded
    with torch.no_grad():
        theirs = classifier(input_ids=ids, attention_mask=mask).logits  # (batch, 1)
        ours = model(ids, mask)
    torch.testing.assert_close(theirs.squeeze(-1), ours, rtol=1e-5, atol=1e-6)


def test_reward_model_round_trips_through_safetensors_with_its_offset(toy_model_dir, tmp_path):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    model.score_offset = 0.25
    model.save_pretrained(tmp_path / "rm", tokenizer)
    files = {p.name for p in (tmp_path / "rm").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer_config.json"} <= files
    assert not files & {"score_head.safetensors", "reward_model.json"}
    assert not any(Path(name).suffix in {".bin", ".pt"} for name in files)

    loaded = RewardModel.from_pretrained(tmp_path / "rm", tokenizer, CPU).eval()
    assert loaded.score_offset == 0.25 and loaded.head.bias is None
    ids, mask = right_padded_batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), model(ids, mask))
        torch.testing.assert_close(loaded.rewards(ids, mask), model(ids, mask) + 0.25)
        torch.testing.assert_close(loaded.values(ids, mask, 0, 4), model.values(ids, mask, 0, 4))


def write_old_format(model_dir: Path, tokenizer, directory: Path) -> nn.Linear:
    """A reward model directory as the earlier format wrote it: the trunk, a biased head in
    `score_head.safetensors` and `reward_model.json`. Returns the head."""
    trunk = load_pretrained(AutoModel, model_dir)
    fit_embeddings(trunk, tokenizer)
    trunk.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(1)
    head = nn.Linear(trunk.config.hidden_size, 1)
    with torch.no_grad():
        head.bias.fill_(-0.75)  # the centring on the demonstrations lived here
    save_file({name: t.detach().clone() for name, t in head.state_dict().items()},
              str(directory / "score_head.safetensors"))  # fmt: skip
    meta = {"format": "instructloop-reward-model", "version": 1, "hidden_size": 64}
    (directory / "reward_model.json").write_text(json.dumps(meta))
    return head


def test_a_reward_model_in_the_old_format_still_loads_and_scores_as_before(toy_model_dir, tmp_path):
    tokenizer = load_tokenizer(toy_model_dir)
    old_head = write_old_format(toy_model_dir, tokenizer, tmp_path / "old")
    ids, mask = right_padded_batch(tokenizer)
    # What the earlier format scored: its biased head on the trunk's hidden state, plainly.
    trunk = load_pretrained(AutoModel, tmp_path / "old").eval()
    with torch.no_grad():
        hidden = trunk(input_ids=ids, attention_mask=mask).last_hidden_state
        before = old_head(hidden).squeeze(-1)  # (batch, seq)
    rows = torch.arange(ids.shape[0])

    loaded = RewardModel.from_pretrained(tmp_path / "old", tokenizer, CPU).eval()
    assert loaded.score_offset == -0.75 and loaded.head.bias is None
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.rewards(ids, mask), before[rows, last_real_index(mask)], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            loaded.values(ids, mask, 0, 3), before[:, :3], rtol=1e-5, atol=1e-6
        )

    # Saved again, it is a sequence classifier whose logits plus its offset are the old scores.
    loaded.save_pretrained(tmp_path / "new", tokenizer)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "new")
    with torch.no_grad():
        logits = classifier(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    torch.testing.assert_close(
        logits + classifier.config.score_offset,
        before[rows, last_real_index(mask)],
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_causal_lm_directory_is_not_taken_for_a_reward_model(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    with pytest.raises(ValueError, match="not a reward model"):
        RewardModel.from_pretrained(toy_model_dir, tokenizer, CPU)


def test_shared_prompt_scoring_equals_scoring_each_full_sequence(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
    records = [
        {
            "prompt": "What does the cat do?",
            "completions": ["tea.", "a dog eats."],
            "ranks": [1, 2],
        },
        {
            "prompt": "Hi",
            "completions": ["the moon.", "a", "the king hides tea."],
            "ranks": [3, 2, 1],
        },
    ]
    batch = collate_rankings(encode_rankings(tokenizer, records, 64), tokenizer.pad_token_id)
    full = [r.prompt + c for r in encode_rankings(tokenizer, records, 64) for c in r.completions]
    full_ids = pad_right(full, tokenizer.pad_token_id)
    full_mask = pad_right([[1] * len(ids) for ids in full], 0)
    with torch.no_grad():
        shared = model.score_completions(
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["completion_ids"],
            batch["completion_mask"],
            batch["ranking_index"],
        )
        separate = model(full_ids, full_mask)
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-5)


def test_shared_prompt_scoring_has_the_gradients_of_scoring_each_full_sequence(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    records = [
        {
            "prompt": "What does the cat do?",
            "completions": ["tea.", "a dog eats."],
            "ranks": [1, 2],
        },
        {"prompt": "Hi", "completions": ["the moon.", "a", "the king hides."], "ranks": [3, 2, 1]},
    ]
    encoded = encode_rankings(tokenizer, records, 64)
    batch = collate_rankings(encoded, tokenizer.pad_token_id)
    full = [r.prompt + c for r in encoded for c in r.completions]
    full_ids = pad_right(full, tokenizer.pad_token_id)
    full_mask = pad_right([[1] * len(ids) for ids in full], 0)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    gradients = []
    for shared in (True, False):
        model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).eval()
        torch.manual_seed(0)
        torch.nn.init.normal_(model.head.weight)  # the same head in both
        if shared:
            scores = model.score_completions(
                batch["prompt_ids"],
                batch["prompt_mask"],
                batch["completion_ids"],
                batch["completion_mask"],
                batch["ranking_index"],
            )
        else:
            scores = model(full_ids, full_mask)
        (scores @ weights).backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
    shared_grads, separate_grads = gradients
    assert shared_grads.keys() == separate_grads.keys()
    for name in shared_grads:
        scale = separate_grads[name].abs().max().item()
        torch.testing.assert_close(
            shared_grads[name], separate_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name
        )


def test_gradients_reach_the_trunk_through_the_shared_prompt(toy_model_dir):
    tokenizer = load_tokenizer(toy_model_dir)
    model = RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU)
    records = [{"prompt": "Hi", "completions": ["tea.", "a dog eats."], "ranks": [1, 2]}]
    batch = collate_rankings(encode_rankings(tokenizer, records, 64), tokenizer.pad_token_id)
    scores = model.score_completions(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["completion_ids"],
        batch["completion_mask"],
        batch["ranking_index"],
    )
    (scores[0] - scores[1]).backward()
    # Position 0 is used by the prompt only: its embedding gets gradient only through the cache.
    assert model.trunk.wpe.weight.grad[0].abs().sum() > 0


def test_a_reward_model_from_another_tokenizer_is_refused(toy_model_dir, tmp_path):
    tokenizer = load_tokenizer(toy_model_dir)
    RewardModel.from_causal_lm(toy_model_dir, tokenizer, CPU).save_pretrained(
        tmp_path / "rm", tokenizer
    )
    other_dir = build_toy_model(tmp_path / "other", with_pad=False)
    with pytest.raises(ValueError, match="different tokenizer"):
        RewardModel.from_pretrained(tmp_path / "rm", load_tokenizer(other_dir), CPU)
