"""The README and the documentation site: short, undated, every figure there, and every
generated figure and table current with the commands that make them
(scripts/refresh_docs.py --check). `make test` also builds the site with --strict."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").glob("**/*.md"))
WRITTEN = [REPO / "README.md", *[p for p in PAGES if "generated" not in p.parts]]


def _refresh_docs():
    spec = importlib.util.spec_from_file_location("refresh_docs", REPO / "scripts" / "refresh_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_starts_a_user_in_at_most_300_lines_without_dates():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for heading in ("## Install", "## Quick start", "## The stages", "## The thesis on the real Yale faces",
                    "## Your own model", "## Scaling out", "## Citation", "## Documentation"):
        assert heading in readme
    assert "make run" in readme and "make test" in readme


@pytest.mark.parametrize("page", WRITTEN, ids=lambda p: p.relative_to(REPO).as_posix())
def test_written_docs_carry_no_dates_and_every_linked_file_exists(page):
    text = page.read_text()
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date in user docs"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
    for include in re.findall(r'--8<-- "([^"]+)"', text):
        assert (REPO / "docs" / "generated" / include).exists(), include


def test_generated_figures_and_tables_are_there_unedited_and_current():
    assert _refresh_docs().check() == []


def test_the_check_notices_an_edited_a_missing_and_a_stale_file(tmp_path, monkeypatch):
    refresh = _refresh_docs()
    generated = tmp_path / "generated"
    shutil.copytree(REPO / "docs" / "generated", generated)
    shutil.copyfile(REPO / "README.md", tmp_path / "README.md")
    monkeypatch.setattr(refresh, "GENERATED", generated)
    monkeypatch.setattr(refresh, "MANIFEST", generated / "manifest.json")
    monkeypatch.setattr(refresh, "README", tmp_path / "README.md")
    assert refresh.check() == []

    (generated / "bench_engine.md").write_text((generated / "bench_engine.md").read_text() + "1.00x\n")
    (generated / "figures" / "network_pg.png").unlink()
    readme = (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace("**reproduced**", "**partly**", 1))
    monkeypatch.setitem(refresh.SOURCES, "bench_knockout", ["benchmarks/bench_engine.py"])  # as if its code changed
    problems = "\n".join(refresh.check())
    assert "bench_engine.md differs from what" in problems
    assert "figures/network_pg.png is missing" in problems
    assert "README.md's thesis summary differs" in problems
    assert "bench_knockout.md is stale" in problems


def test_the_thesis_timing_part_needs_the_yale_faces_and_points_to_itself_when_stale(capsys, monkeypatch):
    refresh = _refresh_docs()
    assert refresh.main(["--part", "bench_thesis"]) == 2
    assert "--part bench_thesis needs --yale PATH" in capsys.readouterr().err
    assert refresh.part_option("bench_thesis") == "bench_thesis"  # not `--part bench`, which skips it
    assert refresh.part_option("bench_knockout") == "bench"
