"""Loaders (Yale, folder, digits) and the duplicate-aware stratified split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import pytest

from pgsweep.data import load_dataset, load_digits, load_folder, load_yale, stratified_split
from pgsweep.data.yale import parse_yale_name
from pgsweep.errors import ConfigError, DataError

from conftest import write_gif


@pytest.mark.parametrize(
    "name, expected",
    [
        ("subject01.happy", (1, "happy", False)),
        ("subject15.centerlight", (15, "centerlight", False)),
        ("subject07.wink.gif", (7, "wink", True)),
        ("subject01.gif", (1, "centerlight", True)),
        ("subject01.glasses.gif", (1, "glasses", True)),
        ("subject01.angry", None),
        ("subject1.happy", None),
        ("subject01", None),
        ("README", None),
    ],
)
def test_parse_yale_name(name, expected):
    assert parse_yale_name(name) == expected


def test_yale_loader_on_plain_names(yale_like):
    images = load_yale(yale_like(), image_size=20)
    assert len(images) == 12
    assert images.images.shape == (12, 1, 20, 20)
    assert images.class_names == ("subject01", "subject02", "subject03")
    assert Counter(images.labels.tolist()) == {0: 4, 1: 4, 2: 4}
    assert 0.0 <= float(images.images.min()) and float(images.images.max()) <= 1.0


def test_yale_loader_accepts_archive_quirks(yale_like):
    root = yale_like(suffix=".gif")  # every name with a .gif suffix, as the mirrors have it
    write_gif(root / "subject01.gif", 100)  # the archive's name for subject01.centerlight
    write_gif(root / "subject02.glasses", 101)
    write_gif(root / "subject02.glasses.gif", 102)  # the stray second copy: ignored
    (root / "README").write_text("Yale faces\n")
    (root / "SHA256SUMS").write_text("abc  subject01.happy\n")
    images = load_yale(root, image_size=16)
    assert len(images) == 14
    assert "subject01.gif" in images.sources
    assert "subject02.glasses" in images.sources and "subject02.glasses.gif" not in images.sources
    assert images.labels[images.sources.index("subject01.gif")] == 0


def test_yale_subject_numbers_are_the_labels(yale_like):
    root = yale_like(["subject03.happy", "subject03.sad", "subject11.happy", "subject11.sad"])
    images = load_yale(root, image_size=16)
    assert images.class_names == ("subject03", "subject11")
    assert images.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("bad_name", ["subject01.angry", "subject1.happy", "face.png", "subject01.happy.png"])
def test_yale_unknown_name_pattern_is_named(yale_like, bad_name):
    root = yale_like()
    write_gif(root / bad_name, 5)
    with pytest.raises(DataError, match=bad_name.replace(".", r"\.")):
        load_yale(root)


def test_image_under_a_non_yale_name_is_named(yale_like):
    # Yale files have no suffix, so an image is recognised by its content, not its name
    root = yale_like()
    write_gif(root / "person05.wink", 7)
    (root / "README").write_text("The Yale Face Database")
    (root / "SHA256SUMS").write_text("0" * 64 + "  subject01.happy\n")
    (root / "notes").write_text("not an image, not a Yale name: skipped")
    with pytest.raises(DataError, match=r"person05\.wink is an image but not a Yale name"):
        load_yale(root)
    (root / "person05.wink").unlink()
    assert len(load_yale(root, image_size=16)) == 12  # README, checksums and plain text stay ignored


def test_truncated_image_is_named(yale_like):
    root = yale_like()
    victim = root / "subject02.sad"
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DataError, match="subject02.sad"):
        load_yale(root)


def test_non_image_bytes_are_named(yale_like):
    root = yale_like()
    (root / "subject03.wink").write_text("not an image")
    with pytest.raises(DataError, match="subject03.wink"):
        load_yale(root)


def test_missing_empty_and_unset_roots(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_yale(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_yale(tmp_path / "empty")
    with pytest.raises(DataError, match="data.root is not set"):
        load_yale(None)
    with pytest.raises(DataError, match="data.root is not set"):
        load_folder("???")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README").write_text("hi")
    with pytest.raises(DataError, match="no Yale images"):
        load_yale(tmp_path / "docs")


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="unknown data.name 'mnist'"):
        load_dataset("mnist")


def test_folder_loader(tmp_path):
    for cls, count in (("alice", 3), ("bob", 2)):
        (tmp_path / cls).mkdir()
        for i in range(count):
            write_gif(tmp_path / cls / f"{i}.gif", i)
    (tmp_path / "bob" / "notes.txt").write_text("ignored")
    images = load_folder(tmp_path, image_size=12)
    assert images.class_names == ("alice", "bob")
    assert images.labels.tolist() == [0, 0, 0, 1, 1]
    assert images.sources[0] == "alice/0.gif"


def test_folder_loader_names_the_files_it_skips_in_one_line(tmp_path, caplog):
    for cls in ("alice", "bob"):
        (tmp_path / cls).mkdir()
        write_gif(tmp_path / cls / "0.gif", 0)
    (tmp_path / "bob" / "notes.txt").write_text("not an image")
    (tmp_path / "alice" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with caplog.at_level("INFO", logger="pgsweep.data.folder"):
        images = load_folder(tmp_path, image_size=12)
    assert len(images) == 2
    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert line == "skipped 2 files that are not images: alice/.DS_Store, bob/notes.txt"


def test_folder_loader_errors(tmp_path):
    write_gif(tmp_path / "loose.gif", 0)
    with pytest.raises(DataError, match="no class subfolders"):
        load_folder(tmp_path)
    (tmp_path / "carol").mkdir()
    with pytest.raises(DataError, match="carol"):
        load_folder(tmp_path)
    write_gif(tmp_path / "carol" / "a.png", 1)
    (tmp_path / "carol" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="b.png"):
        load_folder(tmp_path)


def test_digits_ship_with_the_install():
    images = load_digits(image_size=24)
    assert images.images.shape == (1797, 1, 24, 24)
    assert images.class_names == tuple(str(d) for d in range(10))
    assert float(images.images.max()) == pytest.approx(1.0)


def test_real_yale_faces(yale_root):
    images = load_yale(yale_root, image_size=60)
    assert len(images) == 165
    assert images.images.shape == (165, 1, 60, 60)
    assert len(images.class_names) == 15
    assert Counter(images.labels.tolist()) == {c: 11 for c in range(15)}
    # the database's README lists 9 byte-identical pairs: 156 distinct images
    assert len(set(images.content_ids)) == 156
    sad, normal = images.sources.index("subject04.sad"), images.sources.index("subject04.normal")
    assert images.content_ids[sad] == images.content_ids[normal]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_yale_split_keeps_duplicates_together(yale_root, seed):
    images = load_yale(yale_root, image_size=16)
    split = stratified_split(images.labels.numpy(), images.content_ids, images.class_names, 0.25, 0.0, seed)
    assert split.sizes() == {"train": 124, "val": 0, "test": 41}  # thesis: 2 errors = 4.88% of 41
    assert (split.duplicate_groups, split.duplicate_images) == (9, 18)
    train_ids = {images.content_ids[i] for i in split.train}
    assert not train_ids & {images.content_ids[i] for i in split.test}
    per_class = Counter(images.labels[split.test].tolist())
    assert set(per_class) == set(range(15)) and set(per_class.values()) <= {2, 3}
    assert sorted(np.concatenate([split.train, split.test]).tolist()) == list(range(165))


def test_naive_split_can_straddle_duplicates(yale_root):
    images = load_yale(yale_root, image_size=16)
    straddled = 0
    for seed in range(10):
        split = stratified_split(
            images.labels.numpy(), images.content_ids, images.class_names, 0.25, 0.0, seed,
            group_duplicates=False,
        )
        assert split.duplicate_groups == 0 and len(split.test) == 41
        train_ids = {images.content_ids[i] for i in split.train}
        straddled += len(train_ids & {images.content_ids[i] for i in split.test})
    assert straddled > 0


def test_split_is_seeded():
    labels = np.repeat(np.arange(4), 10)
    ids = [str(i) for i in range(40)]
    names = list("abcd")
    a = stratified_split(labels, ids, names, 0.25, 0.1, seed=3)
    b = stratified_split(labels, ids, names, 0.25, 0.1, seed=3)
    c = stratified_split(labels, ids, names, 0.25, 0.1, seed=4)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, c.test)
    assert a.sizes() == {"train": 26, "val": 4, "test": 10}
    assert not set(a.train) & set(a.val) | set(a.train) & set(a.test) | set(a.val) & set(a.test)


def test_split_needs_images_on_both_sides():
    labels = np.array([0, 0, 0, 1])
    with pytest.raises(DataError, match="class 'b' has 1 distinct image"):
        stratified_split(labels, ["w", "x", "y", "z"], ["a", "b"], 0.25)
    # two identical images are one distinct image when grouped
    labels = np.array([0, 0, 0, 1, 1])
    with pytest.raises(DataError, match="class 'b'"):
        stratified_split(labels, ["w", "x", "y", "z", "z"], ["a", "b"], 0.25)
    split = stratified_split(labels, ["w", "x", "y", "z", "z"], ["a", "b"], 0.25, group_duplicates=False)
    assert len(split.test) >= 2


@pytest.mark.parametrize("test, val", [(0.0, 0.0), (1.0, 0.0), (0.5, 0.5), (0.25, -0.1)])
def test_split_rejects_bad_fractions(test, val):
    with pytest.raises(DataError, match="split fractions"):
        stratified_split(np.zeros(8, dtype=int), [str(i) for i in range(8)], ["a"], test, val)


def test_histogram_equalization_spreads_each_image_over_the_whole_range():
    from pgsweep.data import equalize_histograms

    plain = load_dataset("digits", None, 16)
    dim = type(plain)(plain.images * 0.3 + 0.2, plain.labels, plain.class_names, plain.sources, plain.content_ids)
    equalized = equalize_histograms(dim)
    assert equalized.images.shape == dim.images.shape and equalized.content_ids == dim.content_ids
    per_image = equalized.images.flatten(1)
    spread = per_image.max(1).values - per_image.min(1).values
    assert (spread >= 0.8).all()  # each image now spans most of [0, 1] ...
    assert (dim.images.flatten(1).max(1).values - dim.images.flatten(1).min(1).values).max() <= 0.3 + 1e-6  # ... not 0.3
    assert torch.equal(load_dataset("digits", None, 16, equalize=True).images, equalize_histograms(plain).images)
