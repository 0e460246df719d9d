"""Artifacts (a model version's directory) in a local folder or an S3-compatible bucket, through
fsspec (s3fs for `s3://`). Plain Python: no Django, no torch.

A directory is published as its files plus `manifest.json`, written last, which lists every
file's size and sha256. A reader trusts only a directory whose manifest is there: an object store
has no rename, so the manifest is the publish's commit, and a publish that died halfway (files
without a manifest) is invisible and is simply done again. The artifact's sha256 is that of its
manifest's bytes, so one hash, recorded in the database, vouches for every file.

A worker fetches a remote artifact into a local cache folder named by that sha256, checks every
file against the manifest while it fetches (a corrupt or missing object is an ArtifactError that
names it), and loads from there with `from_pretrained(local_dir, local_files_only=True)`. A local
folder store is read in place, as before the store existed: its files never crossed a network,
so only the manifest and the files' sizes are checked there, not their hashes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
SCHEMES = ("file", "s3")
# Keys come from run and registration ids on the server; this refuses anything else (BAD-INPUTS 20).
KEY = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)*$")


class ArtifactError(Exception):
    """An artifact that cannot be used: not published, an object missing, or not what its
    manifest says."""


@dataclass(frozen=True)
class Published:
    key: str
    uri: str
    sha256: str  # of the manifest's bytes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_of(directory: Path) -> bytes:
    """The manifest of a local directory: each file's size and sha256, by its relative path."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name != MANIFEST:
            files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True).encode()


def check_key(key: str) -> str:
    if not KEY.match(key) or ".." in key.split("/"):
        raise ArtifactError(f"{key!r} is not an artifact key.")
    return key


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """Artifacts under one URL: a local folder (a path or `file://`) or `s3://bucket/prefix`.

    For S3 the keys come from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, or an instance role) and `endpoint_url` points at any
    S3-compatible server (MinIO, moto, Ceph)."""

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        if scheme not in SCHEMES:
            raise ArtifactError(f"{url!r}: artifacts go to a local folder or s3://bucket/prefix.")
        options: dict[str, Any] = {}
        if scheme == "s3":
            # Several processes write the bucket: never answer from a cached listing or instance.
            options = {"skip_instance_cache": True, "use_listings_cache": False}
            if endpoint_url:
                options["client_kwargs"] = {"endpoint_url": endpoint_url}
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            root = str(Path(root).resolve())
        self.root = root.rstrip("/")
        self.url = f"file://{self.root}" if self.local else url.rstrip("/")

    def uri(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"

    def _path(self, key: str, name: str = "") -> str:
        return f"{self.root}/{check_key(key)}" + (f"/{name}" if name else "")

    def manifest(self, key: str) -> bytes | None:
        """The published manifest's bytes, or None while nothing is published under the key."""
        try:
            return bytes(self.fs.cat_file(self._path(key, MANIFEST)))
        except FileNotFoundError:
            return None

    def publish(
        self, source: Path, key: str, *, move: bool = False, cache: Path | None = None
    ) -> Published:
        """Put a local directory under `key`, manifest last. Idempotent: a key already published
        (a redelivered finish) is left as it is. With `move` the directory is the store's
        afterwards: a local store takes it over with one rename when it can (a run's model,
        under the same var/ as the store); after an upload it becomes the `cache` entry of its
        content (the node that trained a model loads it next without fetching it back)."""
        existing = self.manifest(key)
        if existing is not None:
            return Published(key, self.uri(key), hashlib.sha256(existing).hexdigest())
        if not source.is_dir():
            raise ArtifactError(f"{source} is not a directory: nothing to publish as {key!r}.")
        manifest = manifest_of(source)
        sha256 = hashlib.sha256(manifest).hexdigest()
        files = sorted(json.loads(manifest)["files"])
        if self.local:
            self._place_locally(source, Path(self._path(key)), move=move)
            _write_atomically(Path(self._path(key, MANIFEST)), manifest)
        else:
            # Straight under the key: without its manifest a reader ignores what is there, and a
            # publish that died halfway is overwritten by the next one.
            self.fs.put(
                [str(source / name) for name in files], [self._path(key, name) for name in files]
            )
            self.fs.pipe_file(self._path(key, MANIFEST), manifest)
            if move:
                self._keep_in_cache(source, manifest, None if cache is None else cache / sha256)
        return Published(key, self.uri(key), sha256)

    @staticmethod
    def _keep_in_cache(source: Path, manifest: bytes, target: Path | None) -> None:
        if target is not None and not target.exists():
            _write_atomically(source / MANIFEST, manifest)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
                return
            except OSError:  # another filesystem: the first fetch downloads it instead
                pass
        shutil.rmtree(source, ignore_errors=True)

    def _place_locally(self, source: Path, target: Path, *, move: bool) -> None:
        if source.resolve() == target.resolve():
            return  # already in place (a folder from before the store): only the manifest is new
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a publish that died before its manifest
            shutil.rmtree(target)
        if move:
            try:
                os.replace(source, target)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent))
        try:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if move:
            shutil.rmtree(source)

    def fetch(self, key: str, *, sha256: str, cache: Path) -> Path:
        """A local directory holding the artifact, checked against its manifest and `sha256`.

        Remote: downloaded once into `cache/<sha256>` (a folder complete only once its manifest
        is in, written last); a later fetch of the same content is a lookup."""
        uri = self.uri(key)
        if not self.local:
            cached = cache / sha256
            if (cached / MANIFEST).is_file():
                return cached
        manifest = self.manifest(key)
        if manifest is None:
            raise ArtifactError(f"{uri} is not published: it has no {MANIFEST}.")
        found = hashlib.sha256(manifest).hexdigest()
        if found != sha256:
            raise ArtifactError(
                f"{uri}/{MANIFEST} is corrupt or was replaced: sha256 {found}, recorded {sha256}."
            )
        files: dict[str, dict[str, Any]] = json.loads(manifest)["files"]
        if self.local:
            directory = Path(self._path(key))
            for name, entry in files.items():
                path = directory / name
                if not path.is_file():
                    raise ArtifactError(f"{uri}/{name} is missing.")
                if path.stat().st_size != entry["size"]:
                    raise ArtifactError(f"{uri}/{name} is corrupt: its size is not its manifest's.")
            return directory
        return self._download(key, files, manifest, cache / sha256)

    def _download(
        self, key: str, files: dict[str, dict[str, Any]], manifest: bytes, target: Path
    ) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{target.name}-", dir=target.parent))
        try:
            names = sorted(files)
            for name in names:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get([self._path(key, n) for n in names], [str(tmp / n) for n in names])
            except FileNotFoundError:
                missing = [n for n in names if not self.fs.exists(self._path(key, n))]
                raise ArtifactError(
                    f"{self.uri(key)}/{(missing or names)[0]} is missing from the store."
                ) from None
            for name in names:
                found = sha256_file(tmp / name)
                if found != files[name]["sha256"]:
                    raise ArtifactError(
                        f"{self.uri(key)}/{name} is corrupt: sha256 {found}, its manifest says"
                        f" {files[name]['sha256']}."
                    )
            _write_atomically(tmp / MANIFEST, manifest)
            try:
                os.replace(tmp, target)
            except OSError:  # another fetch of the same content finished first
                if not (target / MANIFEST).is_file():
                    raise
                shutil.rmtree(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def delete(self, key: str) -> None:
        """Unpublish (the manifest first, so no reader trusts what remains), then remove."""
        if self.local:
            Path(self._path(key, MANIFEST)).unlink(missing_ok=True)
            shutil.rmtree(self._path(key), ignore_errors=True)
            return
        if self.fs.exists(self._path(key, MANIFEST)):
            self.fs.rm_file(self._path(key, MANIFEST))
        if self.fs.exists(self._path(key)):
            self.fs.rm(self._path(key), recursive=True)
