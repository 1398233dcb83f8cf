"""The thesis report of a multirun: which of the thesis's claims hold, read from the store.

    python -m pgsweep.report PARENT_RUN_ID            # regenerate, from the logged results only

The report reads the jobs' logged metrics and tables back through pgsweep.tracking
(nothing is recomputed), writes report.md (figures beside it in figures/) and a
self-contained report.html (figures embedded), and logs both to the parent run as
report/report.md and report/report.html. The same store gives the same text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pgsweep.report.document import Document
from pgsweep.report.results import load_jobs
from pgsweep.report.thesis import Claim, summary_rows, thesis_report

log = logging.getLogger(__name__)
REPORT_DIR = "report"
TITLE = "pgsweep: the thesis on the Yale faces"


@dataclass(frozen=True)
class Report:
    parent_run_id: str
    document: Document
    claims: list[Claim]

    @property
    def markdown(self) -> str:
        return self.document.markdown()

    @property
    def html(self) -> str:
        return self.document.html(TITLE)

    def summary_markdown(self) -> str:
        """The summary table alone (what the README quotes)."""
        summary = Document()
        summary.table(["claim", "the thesis", "pgsweep", "verdict"], summary_rows(self.claims))
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


def build_report(tracking_uri: str, parent_run_id: str) -> Report:
    """The report of a multirun from its logged results (raises ConfigError for a bad run id)."""
    from pgsweep.tracking import StoreReader

    reader = StoreReader(tracking_uri)
    jobs = load_jobs(reader, parent_run_id)
    document, claims = thesis_report(jobs, parent_run_id)
    return Report(parent_run_id, document, claims)


def report_multirun(tracking, parent_run_id: str, sweep_dir: str | Path) -> Report:
    """At the end of a multirun: build the report, log it to the parent run, copy it to the sweep folder."""
    from pgsweep.tracking import log_files

    report = build_report(tracking.uri, parent_run_id)
    folder = report.write(Path(sweep_dir) / REPORT_DIR)
    log_files(tracking, parent_run_id, folder, REPORT_DIR)
    log.info("thesis report: %s (and report/ of MLflow run %s)", folder / "report.html", parent_run_id)
    return report
