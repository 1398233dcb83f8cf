"""A folder of finished shards, so a sweep resumes where it stopped (any Job's pieces; no Ray here).

The folder's name is a hash of everything that decides the results (the job's key), so
running the same command again finds the pieces it already finished, and a changed config
never mixes with old results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pgsweep.sweep.job import Piece


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

    def tables(self, shards: Iterable[Piece]) -> list[pd.DataFrame]:
        """Each shard's table read back, in the order given."""
        return [pd.read_parquet(self.folder / f"shards/{s.index:06d}.parquet") for s in shards]
