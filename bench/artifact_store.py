"""What the artifact store costs on a model publish and a cold load: the local folder (the
default) and an S3 bucket (moto's S3 server on this host, over HTTP: network latency to a real
bucket comes on top), against loading the directory as before the store.

    OMP_NUM_THREADS=1 python -m bench.artifact_store [--model tiny|smollm2|DIR] [--repeat 5]

- publish: the local store renames the run's folder into place and writes the manifest (every
  file hashed); the bucket store hashes and uploads. Before the store: one rename.
- cold load: fetch (local: the manifest and the files' sizes; bucket: download into an empty
  cache, every file hashed) then tokenizer + model `from_pretrained`. Before the store: the
  same two loads from the folder.
- warm load: the bucket store's second fetch on the same node (a cache hit) plus the loads.
Figures are medians of --repeat runs, printed only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT


def _timed(repeat: int, prepare: Callable[[int], Any], work: Callable[[Any], object]) -> float:
    """Median seconds of `work(prepare(i))` over `repeat` runs (prepare is not timed)."""
    times = []
    for i in range(repeat):
        arg = prepare(i)
        start = time.perf_counter()
        work(arg)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _source(model: str, scratch: Path) -> Path:
    if model == "tiny":
        found = ROOT / "var" / "models" / "tiny-base"
        if not found.is_dir():
            raise SystemExit(
                f"{found} is missing: `python -m training.demo.base_model --out {found}`"
            )
        return found
    if model == "smollm2":
        from training.demo import smollm2

        out = scratch / "smollm2"
        print("dequantising SmolLM2-135M-Instruct from its GGUF (once) ...")
        smollm2.build(out)
        return out
    return Path(model).resolve()


def _load(directory: Path) -> None:
    from transformers import AutoModelForCausalLM

    from training.engine.lm import load_pretrained, load_tokenizer

    load_tokenizer(directory)
    load_pretrained(AutoModelForCausalLM, directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, smollm2 or a model directory")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    import s3fs
    from moto.server import ThreadedMotoServer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    from training.artifacts import Store

    scratch = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir("bench")
        source = _source(args.model, scratch)
        size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        files = sum(1 for p in source.rglob("*") if p.is_file())
        print(f"model: {source} ({files} files, {size / 2**20:.1f} MiB), repeat {args.repeat}")
        local = Store(str(scratch / "models"))
        bucket = Store("s3://bench/instructloop/models", endpoint_url=endpoint)
        _load(source)  # imports and first-touch costs out of the figures

        def fresh_copy(i: int) -> Path:
            target = scratch / "runs" / f"{uuid.uuid4().hex}" / "model"
            shutil.copytree(source, target)
            return target

        def rename_only(produced: Path) -> None:
            os.replace(produced, scratch / f"renamed-{uuid.uuid4().hex}")

        keys: dict[str, list[str]] = {"local": [], "s3": []}

        def publish(store: Store, name: str) -> Callable[[Path], object]:
            def work(produced: Path) -> object:
                key = f"run-{len(keys[name])}-{uuid.uuid4().hex[:8]}"
                keys[name].append(key)
                return store.publish(produced, key, move=True)

            return work

        rows = {
            "publish: rename (before)": _timed(args.repeat, fresh_copy, rename_only),
            "publish: local store": _timed(args.repeat, fresh_copy, publish(local, "local")),
            "publish: S3 (moto)": _timed(args.repeat, fresh_copy, publish(bucket, "s3")),
        }
        sha = {
            name: hashlib.sha256(store.manifest(keys[name][0]) or b"").hexdigest()
            for name, store in (("local", local), ("s3", bucket))
        }
        rows["cold load: from_pretrained only (before)"] = _timed(
            args.repeat, lambda i: source, _load
        )
        rows["cold load: local store"] = _timed(
            args.repeat,
            lambda i: keys["local"][0],
            lambda k: _load(local.fetch(k, sha256=sha["local"], cache=scratch / "unused")),
        )
        rows["cold load: S3 (moto), empty cache"] = _timed(
            args.repeat,
            lambda i: scratch / f"cache-{uuid.uuid4().hex}",
            lambda c: _load(bucket.fetch(keys["s3"][0], sha256=sha["s3"], cache=c)),
        )
        warm = scratch / "cache-warm"
        bucket.fetch(keys["s3"][0], sha256=sha["s3"], cache=warm)
        rows["warm load: S3 (moto), cached"] = _timed(
            args.repeat,
            lambda i: warm,
            lambda c: _load(bucket.fetch(keys["s3"][0], sha256=sha["s3"], cache=c)),
        )
        rows["fetch only: S3 (moto), empty cache"] = _timed(
            args.repeat,
            lambda i: scratch / f"cache-{uuid.uuid4().hex}",
            lambda c: bucket.fetch(keys["s3"][0], sha256=sha["s3"], cache=c),
        )
        width = max(map(len, rows))
        for name, seconds in rows.items():
            print(f"{name:<{width}}  {seconds * 1000:9.1f} ms")
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
