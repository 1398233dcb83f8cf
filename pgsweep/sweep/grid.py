"""The adversarial sweep's grid: (image, target, step) points cut into shards, as a sweep Job.

No Ray here: a shard is plain data. The job's key hashes everything that decides the
results (model weights, images, targets, steps, perturbation, shard sizes), and names the
folder of finished shards (pgsweep.sweep.store.ShardStore).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from pgsweep.analyses.adversarial import Perturbation, evaluate_block
from pgsweep.models.checkpoint import TrainedModel

SORT = ["image", "target", "step_index"]
# every shard checks the inference copy on the grid's first images at all its targets: the
# verdict is kept per worker process, and must not depend on which shard a worker got first
COPY_CHECK_IMAGES = 8


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
    """Everything a worker needs, as plain data (put in Ray's object store once): a sweep Job.

    model: the trained model (a pruned one too), which travels as its model file's content;
    images (N, *x) in pixel range; labels (N,); image_ids (N,) the ids the tables carry;
    the grid is cut into shards of images_per_shard images x targets_per_shard targets.
    """

    model: TrainedModel
    images: torch.Tensor
    labels: torch.Tensor
    image_ids: tuple[int, ...]
    targets: tuple[int, ...]
    steps: tuple[float, ...]
    perturbation: Perturbation
    affine_prefix: str | None
    images_per_shard: int
    targets_per_shard: int
    batch_size: int = 64
    optimize: str = "auto"  # on the network's inference copy (pgsweep.analyses.inference)

    label = "adversarial sweep"

    def pieces(self) -> list[Shard]:
        return make_shards(len(self.image_ids), self.targets, self.images_per_shard, self.targets_per_shard)

    def network(self) -> torch.nn.Module:
        return copy.deepcopy(self.model).network.eval()  # rebuilt from the model file's content

    def run(self, shard: Shard, network: torch.nn.Module | None = None) -> pd.DataFrame:
        """The table of one shard (ordered by image, target, step)."""
        rows = slice(shard.start, shard.stop)
        return evaluate_block(
            network if network is not None else self.network(),
            self.images[rows], self.labels[rows], self.image_ids[rows], shard.targets,
            self.steps, self.perturbation, self.affine_prefix, self.batch_size, self.optimize,
            check_on=(self.images[:COPY_CHECK_IMAGES], self.targets),
        )

    def gather(self, tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
        """Every shard's rows in one table, ordered by image, target, step."""
        return pd.concat(tables, ignore_index=True).sort_values(SORT, ignore_index=True)

    def key(self) -> str:
        """A hash of everything that decides the results (not how many workers compute them)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.images.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.labels.cpu().numpy().astype(np.int64).tobytes())
        digest.update(json.dumps(self.describe(), sort_keys=True).encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        spec = self.model.spec
        return {
            # the thesis convnet keeps its spec, so its earlier shard folders (hashed from it) still resume
            **({"spec": spec.to_dict()} if spec is not None else {"recipe": self.model.recipe.to_dict()}),
            "image_ids": list(self.image_ids), "targets": list(self.targets),
            "steps": list(self.steps), "perturbation": asdict(self.perturbation),
            "affine_prefix": self.affine_prefix, "batch_size": self.batch_size,
            "images_per_shard": self.images_per_shard, "targets_per_shard": self.targets_per_shard,
            # the copy rounds differently; left out when off, so folders from before it still resume
            **({"optimize": self.optimize} if self.optimize != "false" else {}),
        }
