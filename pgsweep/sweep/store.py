"""A folder of finished shards, so a sweep resumes where it stopped (any Job's pieces; no Ray here).

The folder's name is a hash of everything that decides the results (the job's key and the
code fingerprint, pgsweep.provenance), so running the same command again finds the pieces
it already finished, and a changed config, a change to pgsweep's source or a library
upgrade never mixes with old results. code.json beside the folders keeps, for each job,
the fingerprint its pieces were last computed with: the log says what changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pgsweep.provenance import CodeFingerprint, code_fingerprint
from pgsweep.sweep.job import Job, Piece

log = logging.getLogger(__name__)
CODE_MANIFEST = "code.json"


class ShardStore:
    """A folder of finished shards: shards/NNNNNN.parquet plus manifest.jsonl, one line each.

    A shard's file is written under a temporary name and renamed, then its manifest line
    is appended and flushed to disk, so a driver killed at any moment leaves only whole
    shards listed. The manifest also records where each shard ran (node, seconds).
    """

    def __init__(self, folder: Path, description: dict) -> None:
        self.folder = Path(folder)
        (self.folder / "shards").mkdir(parents=True, exist_ok=True)
        grid_file = self.folder / "grid.json"
        if grid_file.exists():
            if json.loads(grid_file.read_text()) != json.loads(json.dumps(description)):
                raise RuntimeError(f"{grid_file} describes another sweep (hash collision?)")
        else:
            grid_file.write_text(json.dumps(description, indent=1))
        self.manifest = self.folder / "manifest.jsonl"

    def finished(self) -> dict[int, dict]:
        """Shard index -> its manifest record, for shards whose file is there."""
        records: dict[int, dict] = {}
        if self.manifest.exists():
            for line in self.manifest.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash mid-write
                    continue
                if (self.folder / record["file"]).exists():
                    records[int(record["shard"])] = record
        return records

    def save(self, shard: Piece, table: pd.DataFrame, **meta: object) -> None:
        name = f"shards/{shard.index:06d}.parquet"
        partial = self.folder / (name + ".partial")
        table.to_parquet(partial, index=False)
        partial.replace(self.folder / name)
        with open(self.manifest, "a") as out:
            out.write(json.dumps({"shard": shard.index, "file": name, "rows": len(table), **meta}) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def clear(self) -> None:
        """Forget every finished shard (recompute=true)."""
        self.manifest.unlink(missing_ok=True)
        for path in (self.folder / "shards").glob("*.parquet"):
            path.unlink()

    def tables(self, shards: Iterable[Piece]) -> list[pd.DataFrame]:
        """Each shard's table read back, in the order given."""
        return [pd.read_parquet(self.folder / f"shards/{s.index:06d}.parquet") for s in shards]


def open_store(root: str | Path, job: Job, recompute: bool = False) -> ShardStore:
    """The store of `job`'s finished pieces under `root`, for the code installed now.

    The folder is named by the job's key and the code fingerprint together. When this code
    has no finished pieces of the job but other code had (code.json says), or recompute is
    set, one line says the job is recomputed and why.
    """
    root = Path(root).expanduser()
    fingerprint = code_fingerprint()
    inputs = job.key()
    folder = root / hashlib.sha256(f"{inputs}:{fingerprint.digest}".encode()).hexdigest()[:16]
    store = ShardStore(folder, {**job.describe(), "code": fingerprint.digest})
    manifest = root / CODE_MANIFEST
    records = _read_json(manifest)
    earlier = records.get(inputs[:16])
    if recompute:
        store.clear()
        log.info("%s: recomputing every piece (recompute=true)", job.label)
    elif earlier and earlier.get("code") != fingerprint.digest and not store.finished():
        changes = fingerprint.changes_since(CodeFingerprint.from_dict(earlier))
        log.info("%s: recomputing: %s since its pieces in %s were computed", job.label, changes,
                 root / earlier.get("folder", "?"))
    records[inputs[:16]] = {"folder": folder.name, **fingerprint.to_dict()}
    partial = manifest.with_name(f"{CODE_MANIFEST}.{os.getpid()}.partial")  # jobs of a multirun may write at once
    partial.write_text(json.dumps(records, indent=1, sort_keys=True))
    partial.replace(manifest)
    return store


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
