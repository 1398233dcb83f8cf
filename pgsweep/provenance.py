"""What made a result: a fingerprint of pgsweep's code and of the libraries whose numbers enter it.

Resumable stores put the fingerprint in their key (pgsweep.sweep.store.open_store), so a
change to pgsweep's source or a library upgrade recomputes instead of resuming old tables;
runs carry it as a tag (pgsweep.tracking turns `run_facts()` into tags).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

import pgsweep

# Distributions whose code computes, rounds or stores pgsweep's numbers.
RESULT_LIBRARIES = ("torch", "torch-pruning", "numpy", "captum", "pytorch-lightning", "scikit-learn",
                    "pillow", "pandas", "pyarrow")
# Recorded on a run, beside the fingerprint, so two runs can be told apart.
RUN_LIBRARIES = ("torch", "pytorch-lightning", "ray", "mlflow", "torch-pruning")
NOT_INSTALLED = "not installed"


def package_dir() -> Path:
    """The installed pgsweep package (tests point it at a copy)."""
    return Path(pgsweep.__file__).resolve().parent


def _source_files(package: Path) -> list[tuple[str, Path]]:
    """(name, path) of every .py under the package and every YAML of its conf/ (a wheel's
    pgsweep/conf, else the source tree's top-level conf/)."""
    files = [(f"pgsweep/{p.relative_to(package)}", p) for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    conf = package / "conf" if (package / "conf").is_dir() else package.parent / "conf"
    if conf.is_dir():
        files += [(f"conf/{p.relative_to(conf)}", p) for p in conf.rglob("*.yaml")]
    return sorted(files)


def library_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


@dataclass(frozen=True)
class CodeFingerprint:
    """Per-file hashes of pgsweep's source and the result libraries' versions."""

    files: dict[str, str] = field(default_factory=dict)      # name -> sha256 of its bytes (16 hex)
    libraries: dict[str, str] = field(default_factory=dict)  # distribution -> version

    @property
    def digest(self) -> str:
        """One hash of both (16 hex): what a store's key and the pgsweep.code tag hold."""
        text = json.dumps({"files": self.files, "libraries": self.libraries}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"code": self.digest, "files": dict(self.files), "libraries": dict(self.libraries)}

    @classmethod
    def from_dict(cls, record: dict) -> CodeFingerprint:
        return cls(dict(record.get("files", {})), dict(record.get("libraries", {})))

    def changes_since(self, earlier: CodeFingerprint) -> str:
        """What differs from `earlier`, in words: 'pgsweep source changed (a.py, b.py); torch 2.1 -> 2.2'."""
        parts = []
        changed = sorted(name for name in set(self.files) | set(earlier.files)
                         if self.files.get(name) != earlier.files.get(name))
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            parts.append(f"pgsweep source changed ({shown})")
        for name in sorted(set(self.libraries) | set(earlier.libraries)):
            before, now = earlier.libraries.get(name, NOT_INSTALLED), self.libraries.get(name, NOT_INSTALLED)
            if before != now:
                parts.append(f"library {name} {before} -> {now}")
        return "; ".join(parts) or "nothing"


def code_fingerprint() -> CodeFingerprint:
    """pgsweep's code as it is on disk now, and the result libraries' installed versions.

    Not cached: hashing the package takes milliseconds, and an edit between two runs of one
    process (a notebook) must count.
    """
    files = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for name, path in _source_files(package_dir())}
    return CodeFingerprint(files, {name: library_version(name) for name in RESULT_LIBRARIES})


def git_commit(folder: Path | None = None) -> str | None:
    """The commit checked out where pgsweep's source lives, when that is a git checkout."""
    folder = folder or package_dir().parent
    if not any((p / ".git").exists() for p in (folder, *folder.parents)):
        return None
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def device_name() -> str:
    """What the stages compute on: a CUDA GPU's name when one is visible, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.machine()})"


@dataclass(frozen=True)
class RunFacts:
    """What made a run, as plain values (pgsweep.tracking writes them as tags)."""

    code: str
    version: str
    git_commit: str | None
    libraries: dict[str, str]
    device: str | None  # None: facts of the code only (a multirun's parent, whose jobs run elsewhere)
    threads: int | None


def run_facts(this_process: bool = True) -> RunFacts:
    """The code's facts, and with this_process the device and torch's threads here (imports torch)."""
    facts = RunFacts(code=code_fingerprint().digest, version=library_version("pgsweep"), git_commit=git_commit(),
                     libraries={name: library_version(name) for name in RUN_LIBRARIES}, device=None, threads=None)
    if this_process:
        import torch

        facts = replace(facts, device=device_name(), threads=torch.get_num_threads())
    return facts
