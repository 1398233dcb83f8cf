"""The thesis report of a multirun: which of the thesis's claims hold, read from the store.

    python -m pgsweep.report PARENT_RUN_ID [RULE=VALUE ...]     # regenerate from the logged results
    python -m pgsweep.report PARENT_RUN_ID --summary --markdown FILE   # the summary table alone

The report reads the jobs' logged metrics and tables back through pgsweep.tracking (nothing
is recomputed; results.py), judges each claim by the rules of conf/report_rules/default.yaml
(claims/, verdicts.py, rules.py), writes report.md (figures beside it in figures/) and a
self-contained report.html (document.py), and logs both to the parent run as
report/report.md and report/report.html. The same store and rules give the same text.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from pgsweep.report.claims import Claim
from pgsweep.report.document import SUMMARY_HEADER, Document, summary_rows, thesis_report
from pgsweep.report.results import load_jobs
from pgsweep.report.rules import Rules, load_rules

log = logging.getLogger(__name__)
REPORT_DIR = "report"
TITLE = "pgsweep: the thesis on the Yale faces"

__all__ = ["Report", "Rules", "build_report", "load_rules", "report_multirun"]


@dataclass(frozen=True)
class Report:
    parent_run_id: str
    document: Document
    claims: list[Claim]
    command: str
    commit: str

    @property
    def markdown(self) -> str:
        return self.document.markdown()

    @property
    def html(self) -> str:
        return self.document.html(TITLE)

    def summary_markdown(self) -> str:
        """The summary table alone, naming the command and the commit that produced it."""
        summary = Document()
        summary.paragraph(f"From `{self.command}` (multirun `{self.parent_run_id}`), report by pgsweep at commit "
                          f"`{self.commit}`:")
        summary.table(SUMMARY_HEADER, summary_rows(self.claims))
        return summary.markdown()

    def write(self, folder: str | Path) -> Path:
        """report.md, report.html and figures/*.png into `folder`; returns the folder."""
        folder = Path(folder)
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.markdown)
        (folder / "report.html").write_text(self.html)
        for figure in self.document.figures:
            (folder / "figures" / figure.name).write_bytes(figure.png)
        return folder


def source_commit() -> str:
    """The git commit of the pgsweep source that writes the report ('unknown' outside a checkout)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def build_report(tracking_uri: str, parent_run_id: str, rules: Rules | None = None) -> Report:
    """The report of a multirun from its logged results (raises ConfigError for a bad run id)."""
    from pgsweep.tracking import StoreReader

    reader = StoreReader(tracking_uri)
    jobs = load_jobs(reader, parent_run_id)
    overrides = reader.run(parent_run_id).params.get("multirun.overrides", "")
    command = f"pgsweep -m {overrides}".strip()
    document, claims = thesis_report(jobs, parent_run_id, rules or load_rules(), command)
    return Report(parent_run_id, document, claims, command, source_commit())


def report_multirun(tracking, parent_run_id: str, sweep_dir: str | Path,
                    rules: Mapping | None = None, overrides: Sequence[str] = ()) -> Report:
    """At the end of a multirun: build the report under the multirun's rules (its report_rules
    node), log it to the parent run, copy it to the sweep folder."""
    from pgsweep.tracking import log_files

    report = build_report(tracking.uri, parent_run_id, load_rules(overrides, base=rules))
    folder = report.write(Path(sweep_dir) / REPORT_DIR)
    log_files(tracking, parent_run_id, folder, REPORT_DIR)
    log.info("thesis report: %s (and report/ of MLflow run %s)", folder / "report.html", parent_run_id)
    return report
