"""A report as blocks (text, tables, quotes, figures), rendered to Markdown and to one
self-contained HTML file (figures embedded as base64 PNG). No I/O but bytes and text."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    """A figure of the report: its file name under figures/, PNG bytes, and a caption."""

    name: str
    png: bytes
    caption: str


@dataclass
class Document:
    """Blocks in order: ("h", level, text), ("p", text), ("quote", text), ("list", items),
    ("table", header, rows), ("figure", Figure)."""

    blocks: list = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def quote(self, text: str) -> None:
        self.blocks.append(("quote", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(("list", list(items)))

    def table(self, header: list[str], rows: list[list[object]]) -> None:
        self.blocks.append(("table", [str(h) for h in header], [[str(c) for c in row] for row in rows]))

    def figure(self, figure: Figure) -> None:
        self.blocks.append(("figure", figure))

    @property
    def figures(self) -> list[Figure]:
        return [block[1] for block in self.blocks if block[0] == "figure"]

    # ------------------------------------------------------------ Markdown

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "p":
                out.append(block[1])
            elif kind == "quote":
                out.append("\n".join(f"> {line}" for line in block[1].splitlines()))
            elif kind == "list":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                header, rows = block[1], block[2]
                lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
                lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "figure":
                figure = block[1]
                out.append(f"![{figure.caption}](figures/{figure.name})\n\n*{figure.caption}*")
        return "\n\n".join(out) + "\n"

    # ------------------------------------------------------------ HTML

    def html(self, title: str) -> str:
        body = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                level = block[1]
                anchor = re.sub(r"[^a-z0-9]+", "-", block[2].lower()).strip("-")
                body.append(f'<h{level} id="{anchor}">{_inline(block[2])}</h{level}>')
            elif kind == "p":
                body.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "quote":
                body.append(f"<blockquote>{'<br>'.join(_inline(line) for line in block[1].splitlines())}</blockquote>")
            elif kind == "list":
                body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
            elif kind == "table":
                header, rows = block[1], block[2]
                head = "".join(f"<th>{_inline(h)}</th>" for h in header)
                cells = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            elif kind == "figure":
                figure = block[1]
                data = base64.b64encode(figure.png).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{_inline(figure.caption)}</figcaption></figure>")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n"
        )


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px;"
    "text-align:left}th{background:#f3f3f3}blockquote{border-left:4px solid #999;margin:1em 0;padding:0.2em 1em;"
    "color:#444;background:#fafafa}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:0.9em;color:#444}"
    "code{background:#f3f3f3;padding:0 3px}"
)


def _inline(text: str) -> str:
    """Markdown's **bold**, *italic* and `code` as HTML, everything else escaped."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", escaped)


def png(figure, dpi: int = 110) -> bytes:
    """A matplotlib Figure as PNG bytes (no timestamp in the file: the same figure, the same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


# ------------------------------------------------------------ the thesis report

SUMMARY_HEADER = ["claim", "the thesis", "pgsweep", "verdict", "setup departs from the thesis's"]


def summary_rows(claims) -> list[list[str]]:
    return [[c.key, c.thesis, c.measured, f"**{c.outcome}**", c.setup or "no"] for c in claims]


def _section_or_missing(section, body: Document, jobs, rules) -> list:
    """A claim section, or, where the jobs did not log what it reads (a stage left out of the
    multirun), one inconclusive row naming the missing metric or table."""
    from pgsweep.errors import PgsweepError
    from pgsweep.report.claims import Claim
    from pgsweep.report.verdicts import INCONCLUSIVE, Verdict

    part = Document()
    try:
        claims = section.section(part, jobs, rules)
    except (KeyError, FileNotFoundError, PgsweepError) as missing:
        what = missing.args[0] if missing.args else type(missing).__name__
        name = section.__name__.rsplit(".", 1)[-1]
        body.heading(2, f"{name}: not measured")
        reason = f"the jobs did not log {what} (was its stage left out?)"
        body.paragraph(f"Not measured: {reason}.")
        return [Claim(name, "(not measured)", "n/a", Verdict(INCONCLUSIVE, "n/a", reason), "")]
    body.blocks.extend(part.blocks)
    return claims


def thesis_report(jobs, parent_run_id: str, rules, command: str) -> tuple[Document, list]:
    """The report of a thesis multirun: a summary table of verdicts, then a section per claim."""
    import numpy as np

    from pgsweep.report.claims import SECTIONS, faithfulness
    from pgsweep.report.claims.common import spread
    from pgsweep.report.results import setup_departures
    from pgsweep.report.verdicts import VERDICTS

    body, claims = Document(), []
    for section in SECTIONS:
        claims += _section_or_missing(section, body, jobs, rules)
    body.heading(2, "7. Beyond the thesis (not judged)")
    rho = {score: [j.metrics.get(f"knockout/{score}/spearman_oracle/mean", np.nan) for j in jobs]
           for score in ("pg_softmax", "pg_logit", "loss_gradient", "activation", "taylor")}
    saturation = [j.metrics.get("final_train_median_true_probability", np.nan) for j in jobs]
    body.items([f"Spearman correlation of each score's filter ranking with the oracle: "
                + ", ".join(f"{score} {spread(values)}" for score, values in rho.items()) + ".",
                f"Softmax saturation: the median probability a model gives each training image's own class, "
                f"{spread(saturation)} (`final_train_median_true_probability`); near 1 the softmax is flat, so its "
                "gradients, and the softmax PG with them, shrink for the most confident classes."])
    claims += _section_or_missing(faithfulness, body, jobs, rules)  # after 7: judges scores the thesis did not have

    doc = Document()
    doc.heading(1, "Querying Deep Neural Networks with Gradients (Lo 2016): the thesis on the Yale faces")
    seeds = sorted({j.seed for j in jobs})
    splits = sorted({j.split_name for j in jobs})
    epochs = sorted({j.epochs for j in jobs})
    departs = setup_departures(jobs, rules.thesis_setup)
    counted = [c for c in claims if c.verdict.counted]
    tally = ", ".join(f"{sum(c.verdict.outcome == v for c in counted)} {v}" for v in VERDICTS)
    doc.paragraph(f"Multirun `{parent_run_id}`: {len(jobs)} models (seeds {', '.join(map(str, seeds))} x "
                  f"{' and '.join(splits)} split; {'/'.join(map(str, epochs))} epochs), from `{command}`. Every "
                  "number below is read from the jobs' logged metrics and tables or from the report's rules "
                  f"(`conf/report_rules/default.yaml`); regenerate with `python -m pgsweep.report {parent_run_id}` "
                  "(rules as `key=value` after the id).")
    if departs:
        doc.paragraph(f"*This run departs from the thesis's setup:* {departs}. Each verdict repeats it.")
    doc.heading(2, "Summary")
    doc.paragraph(f"{len(counted)} claims judged: {tally}; demonstrations are shown and not counted.")
    doc.table(SUMMARY_HEADER, summary_rows(claims))
    doc.blocks += body.blocks
    return doc, claims
