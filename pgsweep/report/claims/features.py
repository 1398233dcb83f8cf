"""Claim 5 (Figures 4.3, 4.4): the top filter and region for the own class and a look-alike.
A demonstration: an argmax always exists, so nothing here can fail; shown, not counted."""

from __future__ import annotations

import pandas as pd

from pgsweep import plots
from pgsweep.report.claims.common import Claim, class_names, claim, figure, first_naive, verdict_line
from pgsweep.report.document import Document, Figure
from pgsweep.report.results import Job
from pgsweep.report.rules import Rules
from pgsweep.report.verdicts import INCONCLUSIVE, Verdict

RULE = ("not a test: the highest-PG filter and position always exist, and the thesis gives one example of each "
        "with no number to compare; shown as a demonstration")


def measure(job: Job) -> pd.DataFrame:
    """One row per chosen identity: the own-class and runner-up filters and positions."""
    if not job.has("features/faces.parquet"):
        return pd.DataFrame()
    faces, table = job.table("features/faces.parquet"), job.table("features/features.parquet")
    rows = []
    for face in faces.itertuples():
        mine = table[table["image"] == face.image]
        own, other = mine[mine["own_class"]], mine[mine["target"] == mine["runner_up"]]
        if len(own) and len(other):
            rows.append({"class_name": face.class_name, "source": face.source, "own": own.iloc[0], "other": other.iloc[0]})
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame, rules: Rules) -> Verdict:
    return Verdict(INCONCLUSIVE, RULE, "a demonstration" if len(table) else "no feature tables logged", counted=False)


def section(doc: Document, jobs: list[Job], rules: Rules) -> list[Claim]:
    doc.heading(2, "5. Characteristic and look-alike features (Figures 4.3, 4.4)")
    doc.quote("The highest PG indicates which filter and region contributes most to classification. (4.3.1)\n"
              "If we take the PG of some other label y != t, we can see what makes the input seem most like some "
              "other class y. (4.3.2)")
    first = first_naive(jobs)
    table = measure(first)
    if len(table):
        names = class_names(first)
        doc.paragraph(f"For the first test image of each chosen identity ({first.label}): the filter and position "
                      "with the highest PG for the image's own class, and for the class the model ranks next (its "
                      "look-alike). Positions are (row, column) of the feature map.")
        doc.table(["identity", "image", "own class: filter, position", "runner-up class", "runner-up: filter, position"],
                  [[r.class_name, r.source,
                    f"{r.own['filter_name']} at ({int(r.own['row'])}, {int(r.own['col'])}), PG {r.own['score']:.2e}",
                    names[int(r.other["target"])],
                    f"{r.other['filter_name']} at ({int(r.other['row'])}, {int(r.other['col'])}), PG "
                    f"{r.other['score']:.2e}"] for r in table.itertuples()])
        faces = first.table("features/faces.parquet")
        doc.figure(figure("feature_boxes.png", plots.feature_boxes(faces, first.table("features/features.parquet"), names),
                          f"The chosen identities' test images ({first.label}); boxes: the receptive field of the "
                          "highest-PG position for the own class (red, top row) and for the runner-up class (blue, "
                          "bottom row)."))
        for kind, caption in (("characteristic", "Figure 4.3: the most characteristic feature"),
                              ("lookalike", "Figure 4.4: what makes the face look like its runner-up")):
            if first.has(f"features/{kind}_0.png"):
                doc.figure(Figure(f"{kind}_0.png", first.file(f"features/{kind}_0.png"),
                                  f"{caption} ({faces['class_name'].iloc[0]}, {first.label})."))
    c = claim("5", "the top filter and region for the own class and for another class",
              f"shown for {len(table)} identities", verdict(table, rules), rules, (), jobs)
    verdict_line(doc, c)
    return [c]
