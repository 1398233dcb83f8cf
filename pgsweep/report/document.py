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
