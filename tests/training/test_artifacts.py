"""training/artifacts.py against a local folder and a real S3-protocol server (moto's, over HTTP):
publish, fetch into an empty cache, a corrupt or missing object, a publish that died halfway."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.s3 import s3_bucket, s3_endpoint  # noqa: F401 - fixtures
from training.artifacts import MANIFEST, ArtifactError, Store


def _model_dir(path: Path) -> Path:
    """A directory shaped like a model version: weights, config, tokenizer in a subfolder."""
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 300)
    (path / "config.json").write_text('{"model_type": "gpt2"}')
    (path / "tok").mkdir()
    (path / "tok" / "tokenizer.json").write_text('{"version": "1.0"}')
    return path


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    return Store(f"{bucket}/prefix/models", endpoint_url=request.getfixturevalue("s3_endpoint"))


def test_a_published_directory_is_fetched_file_for_file_into_an_empty_cache(store, tmp_path):
    source = _model_dir(tmp_path / "produced")
    expected = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*.*")}
    published = store.publish(source, "run-1-20260101")
    assert published.uri == f"{store.url}/run-1-20260101"
    assert published.sha256 == hashlib.sha256(store.manifest("run-1-20260101")).hexdigest()

    local = store.fetch("run-1-20260101", sha256=published.sha256, cache=tmp_path / "node2")
    got = {name: (local / name).read_bytes() for name in expected}
    assert got == expected
    manifest = json.loads((local / MANIFEST).read_bytes())
    assert set(manifest["files"]) == set(expected)
    if not store.local:
        assert local == tmp_path / "node2" / published.sha256
        # A second fetch is a lookup: it no longer needs the bucket.
        store.fs.rm(store._path("run-1-20260101"), recursive=True)
        assert store.fetch("run-1-20260101", sha256=published.sha256, cache=tmp_path / "node2")


def test_publishing_a_key_again_keeps_what_was_published(store, tmp_path):
    first = store.publish(_model_dir(tmp_path / "a"), "k")
    other = _model_dir(tmp_path / "b")
    (other / "config.json").write_text("{}")
    assert store.publish(other, "k") == first


def test_a_corrupt_object_is_refused_naming_it(store, tmp_path):
    published = store.publish(_model_dir(tmp_path / "produced"), "k")
    store.fs.pipe_file(store._path("k", "model.safetensors"), b"\0" * 10)
    with pytest.raises(ArtifactError, match=r"k/model.safetensors is corrupt"):
        store.fetch("k", sha256=published.sha256, cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*/model.safetensors")), "nothing half-fetched stays"


def test_a_missing_object_is_refused_naming_it(store, tmp_path):
    published = store.publish(_model_dir(tmp_path / "produced"), "k")
    store.fs.rm_file(store._path("k", "tok/tokenizer.json"))
    with pytest.raises(ArtifactError, match=r"k/tok/tokenizer.json is missing"):
        store.fetch("k", sha256=published.sha256, cache=tmp_path / "cache")


def test_a_replaced_manifest_does_not_match_the_recorded_sha256(store, tmp_path):
    published = store.publish(_model_dir(tmp_path / "produced"), "k")
    store.fs.pipe_file(store._path("k", MANIFEST), b'{"format": 1, "files": {}}')
    with pytest.raises(ArtifactError, match="manifest.json is corrupt or was replaced"):
        store.fetch("k", sha256=published.sha256, cache=tmp_path / "cache")


def test_files_without_a_manifest_are_not_a_published_artifact(store, tmp_path):
    """A publish that died before its manifest: a reader refuses it; the next publish completes."""
    source = _model_dir(tmp_path / "produced")
    store.fs.makedirs(store._path("k"), exist_ok=True)
    store.fs.put_file(str(source / "config.json"), store._path("k", "config.json"))
    with pytest.raises(ArtifactError, match="is not published"):
        store.fetch("k", sha256="0" * 64, cache=tmp_path / "cache")
    published = store.publish(source, "k")
    assert store.fetch("k", sha256=published.sha256, cache=tmp_path / "cache").is_dir()


def test_a_local_store_takes_a_directory_over_with_a_rename(tmp_path):
    store = Store(str(tmp_path / "models"))
    source = _model_dir(tmp_path / "runs" / "run-1" / "model")
    published = store.publish(source, "run-1", move=True)
    assert not source.exists()
    target = store.fetch("run-1", sha256=published.sha256, cache=tmp_path / "unused")
    assert target == (tmp_path / "models" / "run-1").resolve()
    assert not (tmp_path / "unused").exists(), "a local store is read in place"


@pytest.mark.parametrize("key", ["../x", "/etc", "a/../../b", "", ".hidden", "a//b"])
def test_keys_that_could_escape_the_store_are_refused(tmp_path, key):
    with pytest.raises(ArtifactError, match="not an artifact key"):
        Store(str(tmp_path)).uri(key)


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ArtifactError, match="local folder or s3://"):
        Store("gs://bucket/prefix")


def test_a_directory_already_at_its_key_in_a_local_store_is_published_in_place(tmp_path):
    store = Store(str(tmp_path / "models"))
    source = _model_dir(tmp_path / "models" / "tiny-base")
    published = store.publish(source, "tiny-base")
    assert (source / "model.safetensors").is_file() and (source / MANIFEST).is_file()
    assert store.fetch("tiny-base", sha256=published.sha256, cache=tmp_path / "c") == source


def test_fetches_of_the_same_content_at_once_share_one_cache_entry(store, tmp_path):
    """Two workers' processes on one node may fetch the same version at the same moment."""
    from concurrent.futures import ThreadPoolExecutor

    published = store.publish(_model_dir(tmp_path / "produced"), "k")
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        found = list(
            pool.map(lambda _: store.fetch("k", sha256=published.sha256, cache=cache), range(4))
        )
    assert len(set(found)) == 1 and (found[0] / "model.safetensors").is_file()
    if not store.local:
        assert [p.name for p in cache.iterdir()] == [published.sha256], "no partial copy left"
