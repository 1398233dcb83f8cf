"""Regenerate every generated figure and table of the documentation site, or check them.

    python scripts/refresh_docs.py                      # figures (a digits run) and benchmarks
    python scripts/refresh_docs.py --part figures       # only the figures of a real digits run
    python scripts/refresh_docs.py --part bench --quick # the benchmark tables, few rounds
    python scripts/refresh_docs.py --part thesis --parent RUN_ID [--tracking-uri URI]
    python scripts/refresh_docs.py --part bench_thesis --yale PATH   # the thesis multirun's time (tens of minutes)
    python scripts/refresh_docs.py --check              # every generated file there, unedited, current

Everything lands in docs/generated/: figures under figures/, each table as a Markdown
include that names the command, the commit and the machine that produced it, and
manifest.json, which records for every file its sha256 and a hash of the sources it was
made from. `--check` (run by tests/test_docs.py) fails when a file is missing, was edited
by hand, or its sources changed since it was made; the README's thesis summary must equal
its generated include.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATED = REPO / "docs" / "generated"
MANIFEST = GENERATED / "manifest.json"
README = REPO / "README.md"
# the README's copy of the thesis summary sits between these two lines
README_BEGIN = "<!-- generated: docs/generated/thesis_summary.md (scripts/refresh_docs.py --part thesis) -->"
README_END = "<!-- end generated -->"

# A digits run of every stage, kept short where the defaults would take minutes (pruning).
DIGITS_RUN = [
    "stages=[train,rank,knockout,diagrams,features,adversarial,prune]",
    "prune.criteria=[pg_softmax,taylor,magnitude,random]", "prune.seeds=[0,1]", "prune.finetune_epochs=2",
    "trainer.progress_bar=false", "adversarial.progress_bar=false", "prune.progress_bar=false",
]
# artifact path in the run -> file name under docs/generated/figures/
FIGURES = {
    "rank/heatmap.png": "rank_heatmap.png",
    "knockout/thesis_class_error.png": "knockout_class_error.png",
    "knockout/thesis_overall_error.png": "knockout_overall_error.png",
    "diagrams/network_pg.png": "network_pg.png",
    "features/characteristic_0.png": "characteristic_0.png",
    "features/lookalike_0.png": "lookalike_0.png",
    "adversarial/fig4_5_examples.png": "adversarial_examples.png",
    "adversarial/fig4_6_success.png": "adversarial_success.png",
    "adversarial/fig4_7_induced_error.png": "adversarial_induced_error.png",
    "prune/error_vs_fraction.png": "prune_error_vs_fraction.png",
    "prune/error_vs_latency.png": "prune_error_vs_size.png",
}
# the code a part's output depends on: a change there makes the generated files stale
SOURCES = {
    "figures": ["pgsweep/plots", "pgsweep/prune/plots.py"],
    "bench_engine": ["benchmarks/bench_engine.py"],
    "bench_knockout": ["benchmarks/bench_knockout.py"],
    "bench_adversarial": ["benchmarks/bench_adversarial.py"],
    "bench_adversarial_resnet": ["benchmarks/bench_adversarial.py"],
    "bench_train": ["benchmarks/bench_train.py"],
    "bench_thesis": ["benchmarks/bench_thesis.py"],
    "thesis": [],
}
BENCHMARKS = {  # part -> (script arguments, quick arguments)
    "bench_engine": (["benchmarks/bench_engine.py"], ["--rounds", "3"]),
    # quick: the thesis convnet's knockout only (the ResNet and the 10,000-image ranking take longest)
    "bench_knockout": (["benchmarks/bench_knockout.py"], ["--part", "knockout", "--rounds", "2", "--orderings", "10"]),
    "bench_adversarial": (["benchmarks/bench_adversarial.py"], ["--rounds", "2"]),
    "bench_adversarial_resnet": (["benchmarks/bench_adversarial.py", "--resnet"], ["--rounds", "2"]),
    "bench_train": (["benchmarks/bench_train.py"], ["--rounds", "2", "--epochs", "5"]),
}


def sources_hash(part: str) -> str:
    digest = hashlib.sha256()
    for entry in SOURCES[part]:
        path = REPO / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    # the generated files themselves do not count: a refresh changes them as it goes
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/generated"],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"load average {load:.1f} when it finished")


def provenance(command: str) -> str:
    return f"Produced by `{command}` at commit `{commit()}` on {machine()}."


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def record(manifest: dict, part: str, files: list[Path], command: str) -> None:
    manifest.update(load_manifest())  # what another part wrote meanwhile stays
    for name in [n for n, entry in manifest.items() if entry["part"] == part]:
        del manifest[name]
    for file in files:
        manifest[str(file.relative_to(GENERATED))] = {
            "part": part, "command": command, "commit": commit(), "sha256": file_hash(file),
            "sources": sources_hash(part)}
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def run_pgsweep(folder: Path, overrides: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pgsweep", *overrides,
                           f"tracking.uri=sqlite:///{folder}/mlflow.db", f"adversarial.output_dir={folder}/adv",
                           f"prune.output_dir={folder}/prune", f"hydra.run.dir={folder}/outputs"],
                          cwd=folder, env=env)
    if done.returncode != 0:
        sys.exit(f"refresh_docs: pgsweep failed with status {done.returncode}")


def refresh_figures(manifest: dict) -> None:
    out = GENERATED / "figures"
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="pgsweep-docs-"))  # kept when anything fails, to look into
    run_pgsweep(folder, DIGITS_RUN)
    (artifacts,) = [p for p in folder.glob("mlartifacts/**/artifacts") if (p / "rank").is_dir()]
    written = []
    for source, name in FIGURES.items():
        if not (artifacts / source).exists():
            sys.exit(f"refresh_docs: the digits run logged no {source} (its store: {folder})")
        shutil.copyfile(artifacts / source, out / name)
        written.append(out / name)
    summary = out / "prune_summary.md"
    summary.write_text(provenance(figures_command()) + "\n\n" + (artifacts / "prune" / "summary.md").read_text())
    written.append(summary)
    record(manifest, "figures", written, figures_command())
    shutil.rmtree(folder)


def refresh_bench_thesis(manifest: dict, yale: str) -> None:
    """benchmarks/bench_thesis.py on the full thesis multirun (both launchers, tens of minutes):
    only when asked, never in `all`. Its temporary folders are left out of the page."""
    write_bench_page(manifest, "bench_thesis", ["benchmarks/bench_thesis.py", "--yale", yale],
                     lambda printed: re.sub(r"; its log \S+", "", printed))


def write_bench_page(manifest: dict, part: str, arguments: list[str], clean) -> None:
    """Run one benchmark script from the repository root; its printout, `clean`ed, becomes
    docs/generated/<part>.md under the line naming command, commit and machine."""
    command = "python " + " ".join(arguments)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"refresh_docs: {command} failed:\n{(done.stderr or done.stdout)[-3000:]}")
    target = GENERATED / f"{part}.md"
    target.write_text(f"{provenance(command)}\n\n```text\n{clean(done.stdout.strip()).strip()}\n```\n")
    record(manifest, part, [target], command)


def figures_command() -> str:
    return "pgsweep " + " ".join(DIGITS_RUN)


def refresh_bench(manifest: dict, quick: bool, only: list[str] | None = None) -> None:
    # torchattacks (FGSM, a speed reference) asks for torchvision, which would replace the pinned torch
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "torchattacks==3.5.1"], check=True)
    for part, (arguments, quick_arguments) in BENCHMARKS.items():
        if only and part not in only:
            continue
        # torchattacks prints a line per attack it builds: noise, not a result
        write_bench_page(manifest, part, [*arguments, *(quick_arguments if quick else [])],
                         lambda printed: "\n".join(line for line in printed.splitlines()
                                                    if not line.startswith("Attack mode is changed")))


def refresh_thesis(manifest: dict, parent: str, tracking_uri: str | None) -> None:
    """The thesis summary table of a finished multirun, as the report writes it (its first line
    names the multirun's command and the commit of the code), then the README's copy of it."""
    target = GENERATED / "thesis_summary.md"
    arguments = ["-m", "pgsweep.report", parent, "--summary", "--markdown", str(target)]
    if tracking_uri:
        arguments += ["--tracking-uri", tracking_uri]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, *arguments], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"refresh_docs: python {' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    # the report names the multirun's command and the commit of its code; this page's form adds the machine
    first, _, rest = target.read_text().partition("\n")
    found = re.match(r"From `(.+)` \(multirun `(\w+)`\), report by pgsweep at commit `(\w+)`:$", first)
    if not found:
        sys.exit(f"refresh_docs: the summary's first line does not name its command and commit: {first}")
    multirun, run_id, code = found.groups()
    command = f"python -m pgsweep.report {parent} --summary --markdown {target.relative_to(REPO)}"
    cpus = machine().split(", torch")[0]  # this process's threads and load say nothing of the jobs'
    target.write_text(f"Produced by `python -m pgsweep.report {run_id} --summary` at commit `{code}` on {cpus}, "
                      f"from the multirun `{multirun}`:\n{rest}")
    record(manifest, "thesis", [target], command)
    write_readme_summary()


def write_readme_summary() -> None:
    text = README.read_text()
    begin, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    README.write_text(text[:begin] + "\n" + (GENERATED / "thesis_summary.md").read_text() + text[end:])


def check(parts: list[str] | None = None) -> list[str]:
    """What is missing, edited by hand or stale; empty when the generated docs are current."""
    problems = []
    manifest = load_manifest()
    if not manifest:
        return [f"{MANIFEST.relative_to(REPO)} is missing: run scripts/refresh_docs.py"]
    expected = included_files()
    for name in sorted(expected - set(manifest)):
        problems.append(f"docs/generated/{name} was never generated")
    for name, entry in sorted(manifest.items()):
        if parts and entry["part"] not in parts:
            continue
        path = GENERATED / name
        if not path.exists():
            problems.append(f"docs/generated/{name} is missing")
        elif file_hash(path) != entry["sha256"]:
            problems.append(f"docs/generated/{name} differs from what `{entry['command']}` wrote")
        elif entry["sources"] != sources_hash(entry["part"]):
            problems.append(f"docs/generated/{name} is stale: {', '.join(SOURCES[entry['part']])} changed "
                            f"since commit {entry['commit']} (rerun --part {part_option(entry['part'])})")
        if path.suffix == ".md" and path.exists() and \
                not re.match(r"Produced by `.+` at commit `\w+.*` on .+ CPUs", path.read_text()):
            problems.append(f"docs/generated/{name} does not name its command, commit and machine")
    summary = GENERATED / "thesis_summary.md"
    text = README.read_text()
    if README_BEGIN not in text or README_END not in text:
        problems.append("README.md lost its generated thesis summary markers")
    elif summary.exists():
        begin, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
        if text[begin:end].strip() != summary.read_text().strip():
            problems.append("README.md's thesis summary differs from docs/generated/thesis_summary.md")
    return problems


def included_files() -> set[str]:
    """The generated files the docs show: their includes and their figures (paths under docs/generated/)."""
    names = set()
    for page in [README, *sorted((REPO / "docs").glob("**/*.md"))]:
        if GENERATED in page.parents:
            continue
        text = page.read_text()
        names |= set(re.findall(r'--8<-- "([^"]+)"', text))
        names |= set(re.findall(r"generated/(figures/[\w.-]+\.png)", text))
    return names


def part_option(part: str) -> str:
    return "bench" if part.startswith("bench_") and part in BENCHMARKS else part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/refresh_docs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "figures", "bench", "thesis", "bench_thesis"], default="all",
                        help="all: figures and bench (thesis needs a finished multirun: --parent; bench_thesis "
                             "the Yale faces: --yale)")
    parser.add_argument("--yale", help="the Yale faces folder (--part bench_thesis)")
    parser.add_argument("--quick", action="store_true", help="benchmarks with few rounds")
    parser.add_argument("--bench", nargs="+", choices=list(BENCHMARKS), help="only these benchmarks (--part bench)")
    parser.add_argument("--parent", help="the thesis multirun's parent run id (--part thesis)")
    parser.add_argument("--tracking-uri", help="the store of --parent (default: MLFLOW_TRACKING_URI, else mlflow.db)")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 listing what is wrong")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(f"refresh_docs: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if args.part == "thesis" and not args.parent:
        print("refresh_docs: error: --part thesis needs --parent RUN_ID (the thesis multirun's parent run)",
              file=sys.stderr)
        return 2
    if args.part == "bench_thesis" and not args.yale:
        print("refresh_docs: error: --part bench_thesis needs --yale PATH (the Yale faces folder)", file=sys.stderr)
        return 2
    manifest = load_manifest()
    GENERATED.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "figures"):
        refresh_figures(manifest)
    if args.part in ("all", "bench"):
        refresh_bench(manifest, args.quick, args.bench)
    if args.part == "thesis":
        refresh_thesis(manifest, args.parent, args.tracking_uri)
    if args.part == "bench_thesis":
        refresh_bench_thesis(manifest, args.yale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
