"""Bringing a customer's model in: copy (or download, or dequantise) it into a folder of its own,
then check that every stage can load it, before any model version points at it.

Three sources: a model directory the server can read, a hub name (downloaded here, on the worker),
a GGUF file (dequantised once to safetensors with its tokenizer and chat template). Whatever the
source, the result is a plain Hugging Face directory: config, safetensors weights, tokenizer.

`inspect_model` refuses, each with a `ModelRejected` that says why: weights only in pickle files,
a config that needs remote code, an architecture transformers has no causal LM for, a missing or
broken tokenizer, no EOS token, no chat template and no default stated, a corrupt or truncated
safetensors file, tensors that do not match the architecture. It reads headers and builds the
model on the meta device: nothing the size of the weights is loaded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from training.engine.lm import check_safetensors_weights

# What a model directory needs; anything else (pickle weights, training states, images) stays out.
KEPT_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".tiktoken")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelRejected(ValueError):
    """The model cannot be registered; the message says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    architecture: str  # e.g. LlamaForCausalLM
    model_type: str  # e.g. llama
    parameters: int  # from the weight files' headers (tied weights counted once)
    dtype: str  # the dtype most weights are stored in
    size_bytes: int  # all files of the directory
    vocab_size: int  # the tokenizer's, special tokens included
    context_length: int | None  # max_position_embeddings, when the config says
    chat_template: str  # "model" (its own) or "default" (the one stated at registration)
    pad_token: str  # "model" (its own) or "added" (the stages add one, distinct from EOS)


def _copy_tree(source: Path, target: Path) -> None:
    """The files a model directory needs, hard-linked where the filesystem allows (a model of
    tens of GB is not copied twice on one disk), else copied."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {
            name
            for name in names
            if (Path(directory) / name).is_file() and not name.endswith(KEPT_SUFFIXES)
        }

    shutil.copytree(source, target, copy_function=link_or_copy, ignore=ignore, symlinks=False)


def import_directory(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise ModelRejected(f"{source} is not a directory.")
    try:  # the stages' own refusal of pickle-only weights, before anything is copied
        check_safetensors_weights(source)
    except (ValueError, FileNotFoundError) as exc:
        raise ModelRejected(str(exc)) from exc
    _copy_tree(source, target)


def import_hub(repo_id: str, target: Path, revision: str | None = None) -> None:
    """Download a hub model's safetensors, config and tokenizer (never pickle weights)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(
            repo_id,
            revision=revision or None,
            local_dir=target,
            allow_patterns=[f"*{suffix}" for suffix in KEPT_SUFFIXES],
        )
    except LocalEntryNotFoundError as exc:  # offline, or the hub cannot be reached
        raise ModelRejected(
            f"The hub could not be reached from the worker to download {repo_id!r} ({exc}). "
            "Put the model in a directory under the models root and register that instead."
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelRejected(f"{repo_id!r} could not be downloaded: {exc}") from exc
    shutil.rmtree(target / ".cache", ignore_errors=True)


def import_gguf(source: Path, target: Path) -> None:
    """Dequantise a GGUF file once into a safetensors directory with its tokenizer and chat
    template. transformers reads GGUF (with the `gguf` package) but `save_pretrained` refuses a
    GGUF-loaded model, so the state dict is written here; tied weights are stored once."""
    if not source.is_file():
        raise ModelRejected(f"{source} is not a file.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.float32
        )
    except Exception as exc:  # gguf's reader raises plain ValueErrors, KeyErrors, struct errors
        raise ModelRejected(f"{source.name} could not be read as a GGUF model: {exc}") from exc
    target.mkdir(parents=True)
    # Tied weights (input and output embeddings) once: the config says they are tied.
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            state[name] = tensor
    # Dequantised values need fp32 to be kept exactly (a GGUF block scale times a 4-bit code).
    tensors = {name: t.detach().contiguous() for name, t in state.items()}
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    model.config.dtype = torch.float32
    model.config.architectures = [type(model).__name__]  # GGUF metadata does not name it
    # The weights are dequantised now: the saved config must not claim they are GGUF-quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(str(target))
    model.generation_config.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def _weight_headers(directory: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor in the directory's safetensors files."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:  # pickle files are never copied in (import_directory refuses pickle-only ones)
        raise ModelRejected("No *.safetensors weight files.")
    headers: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as weights:
                for name in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                    piece = weights.get_slice(name)
                    headers[name] = (piece.get_dtype(), tuple(piece.get_shape()))
        except Exception as exc:  # safetensors raises its own SafetensorError on a bad header
            # A truncated file fails here too: safetensors checks the data covers the header.
            raise ModelRejected(f"{file.name} is not a readable safetensors file: {exc}") from exc
    return headers


def _expected_tensors(config: Any) -> dict[str, tuple[int, ...]]:
    """The architecture's tensors, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    tied = {
        name
        for name, _ in model.named_parameters(remove_duplicate=False)
        if name not in dict(model.named_parameters())
    }
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return {name: shape for name, shape in expected.items() if name not in tied}


def _tied_or_optional(name: str, config: Any) -> bool:
    return name == "lm_head.weight" and bool(getattr(config, "tie_word_embeddings", False))


def inspect_model(directory: Path, *, default_chat_template: str = "") -> ModelInfo:
    """Check a model directory as every stage will load it; write the stated default chat
    template into its tokenizer when it has none. Raises ModelRejected."""
    if not (directory / "config.json").is_file():
        raise ModelRejected("No config.json: not a Hugging Face model directory.")
    raw_config = json.loads((directory / "config.json").read_text())
    if raw_config.get("auto_map"):
        raise ModelRejected(
            "Its config asks for remote code (auto_map); running code from a model directory "
            "is refused. Use an architecture transformers ships."
        )
    if raw_config.get("quantization_config"):
        method = raw_config["quantization_config"].get("quant_method", "?")
        raise ModelRejected(
            f"The weights are quantised ({method}); training needs the full-precision model "
            "(or its GGUF file, which is dequantised on registration)."
        )
    try:
        config = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelRejected(f"config.json could not be read: {exc}") from exc
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelRejected(
            f"transformers has no causal LM for model type {config.model_type!r}: only "
            "decoder language models can be trained here."
        )
    headers = _weight_headers(directory)
    expected = _expected_tensors(config)
    missing = [n for n in expected if n not in headers and not _tied_or_optional(n, config)]
    wrong = [n for n, shape in expected.items() if n in headers and headers[n][1] != shape]
    if missing or wrong:
        raise ModelRejected(
            "The weights do not match the config: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing[:5])}" if missing else "",
                    f"wrong shape {', '.join(wrong[:5])}" if wrong else "",
                )
                if part
            )
        )
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelRejected(
            f"No tokenizer beside the weights (none of {', '.join(TOKENIZER_FILES)})."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as exc:  # tokenizers raise many types for missing or broken files
        raise ModelRejected(f"No usable tokenizer beside the weights: {exc}") from exc
    if isinstance(tokenizer, bool) or not hasattr(tokenizer, "get_vocab"):
        raise ModelRejected("No usable tokenizer beside the weights.")
    embeddings = getattr(config, "vocab_size", None) or len(tokenizer)
    if len(tokenizer) < 2 or len(tokenizer) > embeddings:
        raise ModelRejected(
            f"The tokenizer ({len(tokenizer)} tokens) does not fit the model ({embeddings} "
            "embeddings): it belongs to another model, or its files are incomplete."
        )
    if tokenizer.eos_token_id is None:
        raise ModelRejected("The tokenizer has no EOS token: responses must end with one.")
    chat_template = "model"
    if not tokenizer.chat_template:
        if not default_chat_template.strip():
            raise ModelRejected("The tokenizer has no chat template: state the default one to use.")
        try:
            tokenizer.chat_template = default_chat_template
            tokenizer.apply_chat_template(
                [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 TemplateError and what a template raises while rendering
            raise ModelRejected(f"The stated chat template does not render: {exc}") from exc
        tokenizer.save_pretrained(str(directory))
        chat_template = "default"
    pad = tokenizer.pad_token_id
    dtypes = Counter(dtype for dtype, _ in headers.values())
    return ModelInfo(
        architecture=(
            config.architectures
            or [getattr(AutoModelForCausalLM._model_mapping[type(config)], "__name__", "?")]
        )[0],
        model_type=config.model_type,
        parameters=sum(math.prod(shape) for _, shape in headers.values()),
        dtype=_DTYPE_NAMES.get(dtypes.most_common(1)[0][0], dtypes.most_common(1)[0][0]),
        size_bytes=sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()),
        vocab_size=len(tokenizer),
        context_length=getattr(config, "max_position_embeddings", None),
        chat_template=chat_template,
        pad_token="model" if pad is not None and pad != tokenizer.eos_token_id else "added",
    )


_DTYPE_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


def import_model(
    source_kind: str,
    source: str,
    target: Path,
    *,
    default_chat_template: str = "",
    revision: str = "",
) -> dict[str, Any]:
    """Bring the model into `target` (which must not exist) and inspect it; returns its facts.
    On any refusal `target` is removed: nothing half-imported stays behind."""
    try:
        if source_kind == "directory":
            import_directory(Path(source), target)
        elif source_kind == "hub":
            import_hub(source, target, revision or None)
        elif source_kind == "gguf":
            import_gguf(Path(source), target)
        else:
            raise ModelRejected(f"Unknown source kind {source_kind!r}.")
        return asdict(inspect_model(target, default_chat_template=default_chat_template))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
