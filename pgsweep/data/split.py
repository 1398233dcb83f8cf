"""Stratified train/val/test splits that keep identical images on one side."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pgsweep.errors import DataError


@dataclass(frozen=True)
class Split:
    """Indices into an ImageSet, and how many duplicate groups were kept together."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    duplicate_groups: int  # groups of 2+ identical images, each kept on one side
    duplicate_images: int  # images in those groups

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _class_quotas(class_sizes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Split round(fraction * N) over classes in proportion (largest remainder, seeded ties)."""
    if fraction == 0:
        return np.zeros_like(class_sizes)
    exact = class_sizes * fraction
    quotas = np.floor(exact).astype(int)
    remaining = int(round(fraction * class_sizes.sum())) - int(quotas.sum())
    if remaining > 0:
        tie_break = rng.random(len(class_sizes))
        order = np.lexsort((tie_break, -(exact - quotas)))
        quotas[order[:remaining]] += 1
    return quotas


def _take_groups(groups: list[list[int]], quota: int) -> tuple[list[list[int]], list[list[int]]]:
    """Take whole groups, in order, while they fit in `quota` images; at least one if quota > 0."""
    taken: list[list[int]] = []
    rest: list[list[int]] = []
    count = 0
    for group in groups:
        if count + len(group) <= quota:
            taken.append(group)
            count += len(group)
        else:
            rest.append(group)
    if quota > 0 and not taken:  # every group is bigger than the quota: take one anyway
        taken, rest = rest[:1], rest[1:]
    return taken, rest


def stratified_split(
    labels: np.ndarray,
    content_ids: tuple[str, ...] | list[str],
    class_names: tuple[str, ...] | list[str],
    test_fraction: float = 0.25,
    val_fraction: float = 0.0,
    seed: int = 0,
    group_duplicates: bool = True,
) -> Split:
    """Per-class random split; test gets round(test_fraction * N) images overall.

    With group_duplicates, images with the same content id move together, so a
    duplicate never sits on both sides (the Yale set has 9 such pairs). Without it,
    every image is its own group: the naive split of the thesis.
    """
    labels = np.asarray(labels)
    if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise DataError(
            f"split fractions must satisfy 0 < test < 1, 0 <= val, test + val < 1; "
            f"got test={test_fraction}, val={val_fraction}"
        )
    rng = np.random.default_rng(seed)

    # groups of indices per class; a group spanning classes is stratified by its first label
    by_content: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(content_ids):
        by_content[key if group_duplicates else str(index)].append(index)
    groups_of_class: dict[int, list[list[int]]] = defaultdict(list)
    for group in by_content.values():
        groups_of_class[int(labels[group[0]])].append(group)
    duplicate_groups = [g for g in by_content.values() if len(g) > 1]

    classes = np.arange(len(class_names))
    class_sizes = np.array([sum(len(g) for g in groups_of_class[c]) for c in classes])
    needed = 1 + (test_fraction > 0) + (val_fraction > 0)
    for c in classes:
        if len(groups_of_class[c]) < needed:
            raise DataError(
                f"class '{class_names[c]}' has {len(groups_of_class[c])} distinct image(s); "
                f"a train/{'val/' if val_fraction else ''}test split needs at least {needed}"
            )
    test_quota = _class_quotas(class_sizes, test_fraction, rng)
    val_quota = _class_quotas(class_sizes, val_fraction, rng)

    sides: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in classes:
        groups = list(groups_of_class[c])
        rng.shuffle(groups)
        test_groups, groups = _take_groups(groups, max(test_quota[c], 1))
        val_groups, groups = _take_groups(groups, max(val_quota[c], 1) if val_fraction else 0)
        if not groups:  # train must keep one group: take it back from the fuller side
            donor = test_groups if len(test_groups) >= len(val_groups) else val_groups
            groups = [donor.pop()]
        for side, side_groups in (("train", groups), ("val", val_groups), ("test", test_groups)):
            sides[side].extend(i for g in side_groups for i in g)
    return Split(
        train=np.sort(np.array(sides["train"], dtype=np.int64)),
        val=np.sort(np.array(sides["val"], dtype=np.int64)),
        test=np.sort(np.array(sides["test"], dtype=np.int64)),
        duplicate_groups=len(duplicate_groups),
        duplicate_images=sum(len(g) for g in duplicate_groups),
    )
