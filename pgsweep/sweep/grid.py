"""The sweep's grid, its shards, and the folder of finished shards that makes it resumable.

No Ray here: a shard is plain data, and `ShardStore` is files. The folder's name is a
hash of everything that decides the results (model weights, images, targets, steps,
perturbation, shard sizes), so running the same command again finds the shards it
already finished, and a changed config never mixes with old results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgsweep.analyses.adversarial import Perturbation, evaluate_block
from pgsweep.models.spec import ConvNetSpec, ModelRecipe

SORT = ["image", "target", "step_index"]


@dataclass(frozen=True)
class Shard:
    """One unit of work: images [start, stop) of the job's image list x some targets."""

    index: int
    start: int
    stop: int
    targets: tuple[int, ...]

    def points(self, steps: int) -> int:
        return (self.stop - self.start) * len(self.targets) * steps


def make_shards(images: int, targets: Sequence[int], images_per_shard: int, targets_per_shard: int) -> list[Shard]:
    """Cut images x targets into blocks, image-major; every (image, target) in exactly one."""
    shards = []
    for start in range(0, images, images_per_shard):
        for t0 in range(0, len(targets), targets_per_shard):
            shards.append(Shard(len(shards), start, min(start + images_per_shard, images),
                                tuple(int(t) for t in targets[t0 : t0 + targets_per_shard])))
    return shards


@dataclass(frozen=True)
class SweepJob:
    """Everything a worker needs, as plain data (put in Ray's object store once).

    model: {"recipe": ModelRecipe dict (or "spec": a thesis ConvNetSpec dict), "state_dict": tensors,
    "pruning": a pruned model's record, when it is one}; a worker rebuilds the net from it, so its
    class must import there too; images (N, *x) in pixel
    range; labels (N,); image_ids (N,) the ids the tables carry.
    """

    model: dict
    images: torch.Tensor
    labels: torch.Tensor
    image_ids: tuple[int, ...]
    targets: tuple[int, ...]
    steps: tuple[float, ...]
    perturbation: Perturbation
    affine_prefix: str | None
    batch_size: int = 64
    optimize: str = "auto"  # on the network's inference copy (pgsweep.analyses.inference)

    def recipe(self) -> ModelRecipe:
        if "recipe" in self.model:
            return ModelRecipe.from_dict(self.model["recipe"])
        return ModelRecipe.thesis(ConvNetSpec.from_dict(self.model["spec"]))

    def network(self) -> torch.nn.Module:
        from pgsweep.models.build import build_network

        network = build_network(self.recipe())
        if self.model.get("pruning"):  # a pruned model: its base network cut to the pruned widths
            from pgsweep.prune.surgery import replay

            replay(network, self.model["pruning"])
        network.load_state_dict(self.model["state_dict"])
        return network.eval()

    def run(self, shard: Shard, network: torch.nn.Module | None = None) -> pd.DataFrame:
        """The table of one shard (ordered by image, target, step)."""
        rows = slice(shard.start, shard.stop)
        return evaluate_block(
            network if network is not None else self.network(),
            self.images[rows], self.labels[rows], self.image_ids[rows], shard.targets,
            self.steps, self.perturbation, self.affine_prefix, self.batch_size, self.optimize,
        )

    def key(self, images_per_shard: int, targets_per_shard: int) -> str:
        """A hash of everything that decides the results (not how many workers compute them)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model["state_dict"].items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.images.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.labels.cpu().numpy().astype(np.int64).tobytes())
        digest.update(json.dumps(self.describe(images_per_shard, targets_per_shard), sort_keys=True).encode())
        return digest.hexdigest()

    def describe(self, images_per_shard: int, targets_per_shard: int) -> dict:
        return {
            **({"spec": self.model["spec"]} if "spec" in self.model else {"recipe": self.model["recipe"]}),
            "image_ids": list(self.image_ids), "targets": list(self.targets),
            "steps": list(self.steps), "perturbation": asdict(self.perturbation),
            "affine_prefix": self.affine_prefix, "batch_size": self.batch_size,
            "images_per_shard": images_per_shard, "targets_per_shard": targets_per_shard,
            # the copy rounds differently; left out when off, so folders from before it still resume
            **({"optimize": self.optimize} if self.optimize != "false" else {}),
        }


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

    def save(self, shard: Shard, table: pd.DataFrame, **meta: object) -> None:
        name = f"shards/{shard.index:06d}.parquet"
        partial = self.folder / (name + ".partial")
        table.to_parquet(partial, index=False)
        partial.replace(self.folder / name)
        with open(self.manifest, "a") as out:
            out.write(json.dumps({"shard": shard.index, "file": name, "rows": len(table), **meta}) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def table(self, shards: Iterable[Shard]) -> pd.DataFrame:
        """All shards' rows read back, ordered by image, target, step."""
        frames = [pd.read_parquet(self.folder / f"shards/{s.index:06d}.parquet") for s in shards]
        return pd.concat(frames, ignore_index=True).sort_values(SORT, ignore_index=True)
