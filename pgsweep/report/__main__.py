"""`python -m pgsweep.report PARENT_RUN_ID [RULE=VALUE ...]`: the thesis report again, from the store alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgsweep.report",
        description="Regenerate the thesis report of a multirun from its logged results (no recomputation).")
    parser.add_argument("parent_run_id", help="the multirun's parent MLflow run id")
    parser.add_argument("rules", nargs="*", metavar="RULE=VALUE",
                        help="override a rule of conf/report_rules/default.yaml, e.g. knockout.area_margin=0.2")
    parser.add_argument("--tracking-uri", default=None,
                        help="the MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--out", default=None, help="folder for report.md, report.html, figures/ "
                                                    "(default: report-PARENT_RUN_ID)")
    parser.add_argument("--summary", action="store_true",
                        help="only the summary table (Markdown), naming the command and commit behind it")
    parser.add_argument("--markdown", default=None, metavar="FILE",
                        help="with --summary: write the table to FILE instead of printing it")
    args = parser.parse_intermixed_args(argv)

    from pgsweep.errors import PgsweepError
    from pgsweep.report import build_report
    from pgsweep.report.rules import load_rules
    from pgsweep.tracking import default_tracking_uri

    try:
        if args.markdown and not args.summary:
            print("pgsweep: error: --markdown FILE goes with --summary", file=sys.stderr)
            return 2
        rules = load_rules(args.rules)
        report = build_report(args.tracking_uri or default_tracking_uri(), args.parent_run_id, rules)
    except PgsweepError as error:
        print(f"pgsweep: error: {error}", file=sys.stderr)
        return 2
    if args.summary:
        if args.markdown:
            Path(args.markdown).write_text(report.summary_markdown())
            print(args.markdown)
        else:
            sys.stdout.write(report.summary_markdown())
        return 0
    folder = report.write(Path(args.out or f"report-{args.parent_run_id}"))
    print(f"{folder / 'report.md'}\n{folder / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
