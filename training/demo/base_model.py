"""Build the project's default base model from nothing, offline, in a few minutes on 2 CPU cores.

No model hub is reachable, so the demo starts from a GPT-2-shaped model pretrained here on a
synthetic corpus: template English plus instruction dialogues for the demo task families
(training/demo/families.py) in the chat format. Many corpus answers are deliberately imperfect
(wrong, partial, rambling, missing the end-of-text), so the base model follows instructions only
sometimes, like a pretrained LM before InstructGPT's SFT and PPO (Ouyang et al. 2022, sec. 3.5),
and there is visible room for those stages to improve `judge` quality.

    python -m training.demo.base_model --out var/models/tiny-base [--seed 0] [--max-seconds 150]

It trains on 1 thread unless INSTRUCTLOOP_BUILD_THREADS or OMP_NUM_THREADS says more, and reports
where it stands beside the target (build_progress.py) for the pages that wait on it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from training.demo import build_progress, families

EOS = "<|endoftext|>"
PAD = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Each message is "<|role|>\n{content}"; user/system messages end with "\n", assistant messages
# with the eos token. So rendering [..., user] with add_generation_prompt=True and appending
# response + eos gives exactly the rendering of [..., user, assistant], and multi-turn history is
# the same string the model was trained on.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- else -%}{{ '\n' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyConfig:
    seed: int = 0  # seeds the corpus, the initial weights and the batch order
    n_generic_docs: int = 8_000  # template-English paragraphs of 1-4 sentences
    n_dialogues: int = 24_000  # chat-format dialogues over the demo families' train prompts
    gold_fraction: float = 0.45  # share of dialogue answers that are the gold answer
    vocab_size: int = 3000  # byte-level BPE cap; this small corpus runs out of merges near 2k
    n_layer: int = 4  # transformer blocks; the shape is the one the training benchmark expects
    n_embd: int = 128  # hidden width
    n_head: int = 4  # attention heads per block
    n_positions: int = 256  # longest prompt + response the model can see
    block_size: int = 128  # tokens per packed training sequence
    batch_size: int = 8  # sequences per step
    train_steps: int = 1300  # optimizer steps (~1.3M tokens, ~130 s on 2 idle cores)
    lr: float = 3e-3  # AdamW peak learning rate, cosine-decayed to lr/10
    warmup_steps: int = 50  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decay on matrices only (nanoGPT)
    max_seconds: float | None = None  # optional cap on training wall time; breaks determinism


# --- corpus ------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_NAMES = _words(
    "Tom Anna Sam Lily Ben Mia Max Emma Leo Zoe Jack Ella Noah Ruby Finn Lucy Omar Nina "
    "Hugo Ivy Oscar Rosa Theo Alice Peter Clara Daniel Grace Henry Julia Lucas Sofia Adam "
    "Eva"
)
_PEOPLE = _words(
    "boy girl teacher farmer baker doctor child man woman nurse pilot driver singer painter "
    "student king queen grandmother grandfather neighbour sailor cook fisherman gardener "
    "builder dancer writer officer shopkeeper brother sister uncle aunt cousin "
    "friend prince princess soldier hunter miller"
)
_ADJS = _words(
    "small big old young happy little kind tall quiet busy clever brave tired hungry funny "
    "gentle proud shy angry sleepy lucky careful lazy friendly strange silly curious polite "
    "noisy bright cheerful wise poor rich famous calm grumpy"
)
_THINGS = _words(
    "book ball cup hat box bag key lamp chair table basket letter picture kite drum coat "
    "shoe bottle clock bell boat toy map pencil blanket window door bucket ladder candle "
    "mirror pillow umbrella spoon plate bowl sock glove ring necklace flag rope wheel "
    "bicycle guitar violin piano camera radio newspaper envelope notebook scarf"
)
_PLACES = _words(
    "park river school garden kitchen forest beach market village city farm station library "
    "hill lake field street shop bridge castle mountain island harbour museum hospital "
    "bakery zoo playground meadow valley cave tower church office"
)
_TIMES = (
    "today",
    "in the morning",
    "in the evening",
    "at night",
    "every day",
    "after lunch",
    "on Sunday",
    "last week",
    "in the summer",
    "in the winter",
)
# (present, past) forms of intransitive verbs, and of transitive verbs taking a thing
_MOVES = (
    ("walks", "walked"),
    ("runs", "ran"),
    ("plays", "played"),
    ("sings", "sang"),
    ("sleeps", "slept"),
    ("waits", "waited"),
    ("works", "worked"),
    ("sits", "sat"),
    ("dances", "danced"),
    ("reads", "read"),
    ("laughs", "laughed"),
    ("rests", "rested"),
)
_HANDLES = (
    ("finds", "found"),
    ("carries", "carried"),
    ("opens", "opened"),
    ("cleans", "cleaned"),
    ("paints", "painted"),
    ("buys", "bought"),
    ("loses", "lost"),
    ("makes", "made"),
    ("holds", "held"),
    ("gives away", "gave away"),
)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _plural(noun: str) -> str:
    return noun + "es" if noun.endswith(("s", "x", "ch", "sh")) else noun + "s"


def _subject(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(_NAMES)
    if kind == 1:
        return f"the {rng.choice(_ADJS)} {rng.choice(_PEOPLE)}"
    return f"the {rng.choice(families.CATEGORIES['animals'] + families.CATEGORIES['birds'])}"


def _generic_sentence(rng: random.Random) -> str:
    """One simple, grammatical English sentence from a handful of templates."""
    subj = _subject(rng)
    cats = families.CATEGORIES
    place = f"{rng.choice(['in', 'near', 'by'])} the {rng.choice(_PLACES)}"
    present, past = rng.choice(_MOVES)
    holds, held = rng.choice(_HANDLES)
    thing = f"the {rng.choice(_ADJS + cats['colors'])} {rng.choice(_THINGS)}"
    kind = rng.randrange(13)
    if kind == 0:
        text = f"{subj} {present} {place}"
    elif kind == 1:
        text = f"{subj} {past} {place} {rng.choice(_TIMES)}"
    elif kind == 2:
        text = f"{subj} {holds} {thing}"
    elif kind == 3:
        text = f"{rng.choice(_TIMES)}, {subj} {held} {thing} {place}"
    elif kind == 4:
        fruit, vegetable = rng.choice(cats["fruits"]), rng.choice(cats["vegetables"])
        text = f"{subj} ate {_a(fruit)} and {_a(vegetable)}"
    elif kind == 5:
        text = f"{subj} drank some {rng.choice(cats['drinks'])} {rng.choice(_TIMES)}"
    elif kind == 6:
        text = f"{subj} saw {_a(rng.choice(cats['birds']))} {place}"
    elif kind == 7:
        text = f"{subj} drew {_a(rng.choice(cats['colors']))} {rng.choice(cats['shapes'])}"
    elif kind == 8:
        text = f"{subj} went to the {rng.choice(_PLACES)} by {rng.choice(cats['vehicles'])}"
    elif kind == 9:
        a, b = rng.choice(families.OPPOSITE_PAIRS)
        text = f"{thing} was {a}, but now it is {b}"
    elif kind == 10:
        text = f"{subj} is {rng.choice(_ADJS)} because {rng.choice(_NAMES)} {held} {thing}"
    elif kind == 11:
        text = f"there were {rng.randint(2, 60)} {_plural(rng.choice(_THINGS))} {place}"
    else:
        text = rng.choice([s for _, s in families.SENTENCE_TOPICS.values()]).rstrip(".")
    return text[0].upper() + text[1:] + "."


def _fact_sentence(rng: random.Random) -> str:
    """A true statement of the knowledge the demo tasks draw on, worded unlike their answers.

    Knowledge comes from pretraining and instruction following from fine-tuning (InstructGPT
    sec. 5.1): the base model should know that 7 > 4 before SFT teaches it to answer "Yes.".
    """
    name, thing = rng.choice(_NAMES), _plural(rng.choice(_THINGS))
    a, b = rng.sample(range(21), 2)
    kind = rng.randrange(8)
    if kind == 0:
        text = rng.choice([f"after {a} comes {a + 1}", f"the number before {a + 1} is {a}"])
    elif kind == 1:
        run = list(range(a, a + rng.randint(3, 6)))
        if rng.random() < 0.5:
            run.reverse()
        text = f"{name} counted {', '.join(map(str, run[:-1]))} and {run[-1]}"
    elif kind == 2:
        big, small = max(a, b), min(a, b)
        text = rng.choice([f"{big} is bigger than {small}", f"{small} is smaller than {big}"])
    elif kind == 3:
        a, b = a % 13, b % 13
        text = f"{name} had {a} {thing} and got {b} more, so {name} had {a + b} {thing}"
    elif kind == 4:
        a, b = sorted((a % 13, b % 13), reverse=True)
        text = f"{name} had {a} {thing} and lost {b}, so {a - b} {thing} were left"
    elif kind == 5:
        x, y = rng.choice(families.OPPOSITE_PAIRS)[:: rng.choice([1, -1])]
        text = f"{x} and {y} mean opposite things"
    elif kind == 6:
        category = rng.choice(list(families.CATEGORIES))
        text = f"{_a(rng.choice(families.CATEGORIES[category]))} is one of the {category}"
    else:
        word = rng.choice(families.REVERSE_WORDS)
        text = f"the letters of {word} are {' '.join(word)}"
    return text[0].upper() + text[1:] + "."


def _generic_doc(rng: random.Random) -> str:
    sentences = [
        _fact_sentence(rng) if rng.random() < 0.4 else _generic_sentence(rng)
        for _ in range(rng.randint(1, 4))
    ]
    return " ".join(sentences)


def render_chat(messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """Plain-Python rendering of CHAT_TEMPLATE, used to write the corpus without a tokenizer."""
    parts = []
    for message in messages:
        end = EOS if message["role"] == "assistant" else "\n"
        parts.append(f"<|{message['role']}|>\n{message['content']}{end}")
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def _imperfect_answer(prompt: str, rng: random.Random) -> tuple[str, bool]:
    """A wrong, partial, rambling or unterminated answer, and whether it ends with eos."""
    gold = families.gold_response(prompt)
    roll = rng.random()
    if roll < 0.35:
        return families.flawed_response(prompt, seed=rng.randrange(2**31)), True
    if roll < 0.65:
        filler = " ".join(_generic_sentence(rng) for _ in range(rng.randint(1, 3)))
        return f"{gold} {filler}", True  # rambling past the answer
    if roll < 0.92:
        return gold, False  # no end-of-text: the document runs on into unrelated text
    return prompt, True  # echoes the question, as base LMs often do


def _dialogue(rng: random.Random, cfg: TinyConfig, prompts: list[str]) -> str:
    messages: list[dict[str, str]] = []
    for _ in range(2 if rng.random() < 0.1 else 1):  # some multi-turn, same format
        prompt = rng.choice(prompts)
        if rng.random() < cfg.gold_fraction:
            answer, ends = families.gold_response(prompt), True
        else:
            answer, ends = _imperfect_answer(prompt, rng)
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        if not ends:
            text = render_chat(messages)
            return text.removesuffix(EOS) + " " + _generic_doc(rng) + EOS
    return render_chat(messages)


def build_corpus(cfg: TinyConfig) -> list[str]:
    """Documents, each ending with EOS; deterministic in cfg.seed. Uses train-split prompts only."""
    rng = random.Random(cfg.seed)
    train_prompts = families.all_prompts(split="train")
    by_family: dict[str, list[str]] = {}
    for prompt in train_prompts:
        by_family.setdefault(families.family_of(prompt) or "", []).append(prompt)
    family_names = sorted(by_family)
    docs = [_generic_doc(rng) + EOS for _ in range(cfg.n_generic_docs)]
    for _ in range(cfg.n_dialogues):
        docs.append(_dialogue(rng, cfg, by_family[rng.choice(family_names)]))
    rng.shuffle(docs)
    return docs


# --- tokenizer ---------------------------------------------------------------------------------


def train_tokenizer(docs: list[str], cfg: TinyConfig) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) trained on the corpus, wrapped for transformers."""
    specials = [EOS, PAD, *ROLE_TOKENS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(docs, trainer=trainer, length=len(docs))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=cfg.n_positions,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# --- model -------------------------------------------------------------------------------------


def new_model(cfg: TinyConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        # No dropout: one short pass over the data cannot overfit, and later stages (PPO) want a
        # deterministic policy anyway.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def pack(token_ids: list[list[int]], block_size: int) -> torch.Tensor:
    """Concatenate documents (each already ends with eos) and cut into full blocks."""
    stream = [t for ids in token_ids for t in ids]
    n_blocks = len(stream) // block_size
    return torch.tensor(stream[: n_blocks * block_size]).view(n_blocks, block_size)


def _lr_at(step: int, cfg: TinyConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.train_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: GPT2LMHeadModel,
    blocks: torch.Tensor,
    cfg: TinyConfig,
    *,
    on_progress: Callable[[int, float], None] = lambda step, loss: None,
) -> dict[str, float]:
    """Plain next-token pretraining on packed blocks; returns final loss, steps, stop reason."""
    generator = torch.Generator().manual_seed(cfg.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    started = time.monotonic()
    losses: list[float] = []
    for step in range(cfg.train_steps):
        if cfg.max_seconds is not None and time.monotonic() - started > cfg.max_seconds:
            break
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        index = torch.randint(len(blocks), (cfg.batch_size,), generator=generator)
        input_ids = blocks[index]  # (batch, block_size)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        on_progress(step + 1, losses[-1])
    model.eval()
    recent = losses[-10:]
    return {
        "train_steps": len(losses),
        "final_loss": round(sum(recent) / len(recent), 4),
        "stopped_at_time_cap": len(losses) < cfg.train_steps,
    }


# --- build -------------------------------------------------------------------------------------


def builder_hash() -> str:
    """Changes whenever the code that defines the base model (this file or the tasks) changes."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(families.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_threads() -> int:
    """Threads for the build: INSTRUCTLOOP_BUILD_THREADS, else OMP_NUM_THREADS, else 1. More
    than one only pays on idle cores: on a shared machine OpenMP threads spin waiting for each
    other (docs/training.md), and a 4-minute build took 56."""
    for name in ("INSTRUCTLOOP_BUILD_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return 1


def build(
    out_dir: Path,
    cfg: TinyConfig,
    *,
    log: Callable[[str], None] = print,
    tell: Callable[[str, int, float | None], None] = lambda phase, step, eta: None,
) -> dict:
    """Build corpus, tokenizer and model into `out_dir` (a new directory); return build info.
    `tell(phase, step, eta_seconds)` hears where it stands (build_progress writes it down)."""
    torch.manual_seed(cfg.seed)
    phases: dict[str, float] = {}
    cpu_phases: dict[str, float] = {}
    clock, cpu_clock = time.monotonic(), time.process_time()

    def phase(name: str) -> None:
        # CPU seconds too: on a shared machine wall time says more about the neighbours.
        nonlocal clock, cpu_clock
        now, cpu_now = time.monotonic(), time.process_time()
        phases[name], cpu_phases[name] = round(now - clock, 2), round(cpu_now - cpu_clock, 2)
        log(f"[tiny] {name}: {phases[name]:.1f}s wall, {cpu_phases[name]:.1f}s cpu")
        clock, cpu_clock = now, cpu_now

    tell("corpus", 0, None)
    docs = build_corpus(cfg)
    phase("corpus")
    tell("tokenizer", 0, None)
    tokenizer = train_tokenizer(docs, cfg)
    phase("tokenizer")
    tell("encode", 0, None)
    token_ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    blocks = pack(token_ids, cfg.block_size)
    phase("encode")
    log(f"[tiny] {len(docs)} docs, {blocks.numel()} tokens, vocab {len(tokenizer)}")

    model = new_model(cfg, tokenizer)
    tell("train", 0, None)
    train_started = time.monotonic()

    def progress(step: int, loss: float) -> None:
        if step % 10 == 0 or step == cfg.train_steps:
            eta = build_progress.eta_seconds(
                step=step,
                total_steps=cfg.train_steps,
                train_seconds=time.monotonic() - train_started,
            )
            tell("train", step, eta)
            if step % 100 == 0 or step == cfg.train_steps:
                left = f", about {eta:.0f}s left" if eta is not None else ""
                log(f"[tiny] step {step}/{cfg.train_steps} loss {loss:.3f}{left}")

    threads = torch.get_num_threads()
    torch.set_num_threads(build_threads())
    try:
        result = train(model, blocks, cfg, on_progress=progress)
    finally:
        torch.set_num_threads(threads)
    phase("train")
    tell("save", cfg.train_steps, 2.0)
    # Sampling from the full distribution by default: PPO's logprobs must be those of the sampler,
    # and transformers otherwise applies top_k=50 to any do_sample call that does not unset it.
    model.generation_config.update(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    phase("save")
    info = {
        "builder_hash": builder_hash(),
        "config": asdict(cfg),
        "corpus_docs": len(docs),
        "corpus_tokens": blocks.numel(),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        **result,
        "phase_seconds": phases,
        "phase_cpu_seconds": cpu_phases,
        "seconds": round(sum(phases.values()), 2),
    }
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


@contextlib.contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    # One builder at a time per target (the test runner and the demo may start together).
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_fresh(out_dir: Path, cfg: TinyConfig) -> bool:
    """Built by this code with this config, and trained to the end (not cut by max_seconds)."""
    try:
        info = json.loads((out_dir / "build_info.json").read_text())
    except (OSError, ValueError):
        return False
    built_cfg = {**info.get("config", {}), "max_seconds": cfg.max_seconds}
    return (
        info.get("builder_hash") == builder_hash()
        and built_cfg == asdict(cfg)
        and not info.get("stopped_at_time_cap", True)
    )


def build_atomically(out_dir: Path, cfg: TinyConfig, *, log: Callable[[str], None] = print) -> dict:
    """Build beside `out_dir` and swap it in by rename, so a killed build leaves no half model."""
    out_dir = Path(out_dir)
    tmp_dir = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    old_dir = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    if out_dir.exists() and not (out_dir / "build_info.json").exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not a tiny-model build; not replacing it")
    started = time.time()

    def tell(phase: str, step: int, eta: float | None) -> None:
        build_progress.progress_write(
            out_dir,
            build_progress.BuildProgress(
                phase=phase, step=step, total_steps=cfg.train_steps, started_at=started,
                updated_at=time.time(), eta_seconds=eta,
            ),
        )  # fmt: skip

    try:
        info = build(tmp_dir, cfg, log=log, tell=tell)
        if out_dir.exists():
            out_dir.rename(old_dir)
        tmp_dir.rename(out_dir)
    finally:
        build_progress.progress_clear(out_dir)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(old_dir, ignore_errors=True)
    return info


def ensure_tiny_model(out_dir: Path, *, cfg: TinyConfig | None = None) -> Path:
    """Return `out_dir`, building the base model there first if missing or built by older code."""
    cfg = cfg or TinyConfig()
    out_dir = Path(out_dir)
    if _is_fresh(out_dir, cfg):
        return out_dir
    with _build_lock(out_dir):
        if not _is_fresh(out_dir, cfg):  # another process may have built it while we waited
            build_atomically(out_dir, cfg)
    return out_dir


# --- report ------------------------------------------------------------------------------------


@torch.no_grad()
def generate_answers(
    model_dir: Path, prompts: list[str], *, do_sample: bool, seed: int = 0, max_new_tokens: int = 48
) -> list[str]:
    """Answers from a saved model, loaded the way every later stage loads it."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"  # decoder-only batch generation continues from the right
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(seed)
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    answers = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start : start + 32], return_tensors="pt", padding=True)
        output = model.generate(
            **batch,
            do_sample=do_sample,
            max_new_tokens=max_new_tokens,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]  # (batch, new)
        answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [a.strip() for a in answers]


def report(model_dir: Path, *, n_prompts: int = 100, seed: int = 0) -> dict[str, float]:
    """Mean judge quality of greedy and sampled answers vs gold on held-out demo prompts."""
    prompts = families.sample_prompts(n_prompts, seed=seed, split="heldout")
    scores: dict[str, float] = {}
    for name, do_sample in (("greedy", False), ("sampled", True)):
        answers = generate_answers(model_dir, prompts, do_sample=do_sample, seed=seed)
        qualities = [families.judge(p, a).quality for p, a in zip(prompts, answers, strict=True)]
        scores[name] = sum(qualities) / len(qualities)
        for prompt, answer, quality in list(zip(prompts, answers, qualities, strict=True))[:8]:
            print(f"  [{name}] {prompt!r} -> {answer!r}  (quality {quality:.2f})")
    gold = [families.judge(p, families.gold_response(p)).quality for p in prompts]
    scores["gold"] = sum(gold) / len(gold)
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/models/tiny-base"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None, help="cap on training time")
    parser.add_argument("--steps", type=int, default=TinyConfig.train_steps)
    parser.add_argument("--report", type=int, default=100, help="held-out prompts to judge; 0=none")
    args = parser.parse_args(argv)
    # Stopped (./dev up's Ctrl+C sends TERM): unwind, so the build's report and its half-built
    # directory are removed (build_atomically's finally) instead of left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cfg = TinyConfig(seed=args.seed, max_seconds=args.max_seconds, train_steps=args.steps)
    with _build_lock(args.out):
        info = build_atomically(args.out, cfg)
    print(json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2))
    if args.report:
        scores = report(args.out, n_prompts=args.report, seed=args.seed)
        print("[tiny] mean judge quality on held-out prompts: " + json.dumps(scores))


if __name__ == "__main__":
    main()
