"""How long `pgsweep` takes to answer `--help` and a config error: this tree vs a baseline commit.

    .venv/bin/python benchmarks/bench_startup.py --baseline 917e83f --rounds 5

The baseline commit is exported with `git archive` into a temporary folder and put
first on PYTHONPATH, so both trees run with the same interpreter and packages. Each
round runs every (tree, command) pair once, in a shuffled order, each a fresh
process in an empty folder; the table reports medians over rounds and the ratio
baseline / this tree. Only the ratios are meant to be compared across machines.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "pgsweep --help": ["--help"],
    "pgsweep trainer.max_epochs=0 (config error)": ["trainer.max_epochs=0"],
    "pgsweep stages=[evaluate] (no model_ref)": ["stages=[evaluate]"],
}
_RUN = "import sys; from pgsweep.cli import main; sys.argv[0] = 'pgsweep'; main()"


def export(commit: str, folder: Path) -> Path:
    folder.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def seconds(tree: Path, args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _RUN, *args], cwd=cwd, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(tree)})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit to compare with, e.g. 917e83f")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        trees = {"baseline": export(args.baseline, scratch / "baseline"), "this tree": REPO}
        pairs = [(tree, name) for tree in trees for name in COMMANDS]
        times: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
        for _ in range(args.rounds):
            random.shuffle(pairs)
            for tree, name in pairs:
                workdir = Path(tempfile.mkdtemp(dir=scratch))
                times[(tree, name)].append(seconds(trees[tree], COMMANDS[name], workdir))
    print(f"| command ({args.rounds} rounds, median) | baseline {args.baseline} | this tree | ratio |")
    print("| --- | --- | --- | --- |")
    for name in COMMANDS:
        before = statistics.median(times[("baseline", name)])
        after = statistics.median(times[("this tree", name)])
        print(f"| `{name}` | {before:.2f} s | {after:.2f} s | {before / after:.1f}x |")


if __name__ == "__main__":
    main()
