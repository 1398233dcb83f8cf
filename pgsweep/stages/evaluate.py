"""Stage `evaluate`: classification error of the model on the train/val/test images it was split with."""

from __future__ import annotations

import logging

from pgsweep.stages.common import log_misclassified, split_reports

log = logging.getLogger(__name__)


def run(ctx) -> None:
    """Stage `evaluate`: error of the model on the train/val/test images it was split with.

    Logs eval_{split}_{error,loss,misclassified} and, like training, the list of
    misclassified images of each split (errors/{split}_misclassified.txt).
    """
    assert ctx.model is not None
    reports = split_reports(ctx.model.network, ctx.images, ctx.split)
    for report in reports.values():
        ctx.tracker.log_metrics(report.metrics("eval_"), step=0)
        log_misclassified(ctx.tracker, report)
        log.info("%s error %.4f (%d of %d)", report.split, report.error, report.misclassified, report.images)
    ctx.reports["evaluate"] = reports
