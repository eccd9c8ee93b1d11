"""The HTML drift report: one self-contained file a researcher opens offline.

``render_report(store, out_path, *, model=None, since=None, include_prompts=False)`` aggregates
the stored history in DuckDB (:mod:`audit.report.data`), builds plotly figures
(:mod:`audit.report.figures`) and renders ``templates/report.html.j2``
(:mod:`audit.report.render`).
"""

from audit.report.render import DEFAULT_REPORT_PATH, render_report

__all__ = ["DEFAULT_REPORT_PATH", "render_report"]
