"""rich rendering of a comparison report for `swinref golden compare` (imported only by the CLI)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from swinref.analysis.render import _fit, _out
from swinref.golden.compare import _num, summary_lines


def report(rep: dict[str, Any]) -> None:
    console = _out()  # the analysis tables' console: the terminal's width, or 160 columns when piped
    title = (f"{rep['golden']} ({rep['golden_dtype']}, policy {rep['policy']})"
             + (f" vs {rep['candidate']}" if rep.get("candidate") else "")
             + (f", mapping {rep['mapping']}" if rep["mapping"] else ""))
    t = Table(title=escape(title))
    for col in ("point", "candidate name", "status", "max abs", "tolerance", "max rel", "ulp", "worst index"):
        t.add_column(col, justify="right" if col in ("max abs", "tolerance", "max rel", "ulp") else "left")
    for r in rep["points"]:
        first = r["name"] == rep["first_failure"]
        style = "bold red" if first else ("red" if r["status"] != "pass" else None)
        name = ("-> " if first else "") + r["name"]
        if r["status"] == "shape":
            t.add_row(name, r["candidate_name"], "SHAPE", "", "", "", "", escape(r["note"]), style=style)
            continue
        t.add_row(name, r["candidate_name"], r["status"].upper(), _num(r["max_abs"]), _num(r["tolerance"]),
                  _num(r["max_rel"]), _num(r["ulp"]), str(r["worst_index"]), style=style)
    console.print(_fit(t))  # point names are never cut, at 80 columns too
    for text, style in summary_lines(rep):
        console.print(escape(text), style=style)
