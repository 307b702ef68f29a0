"""``report.html``: one self-contained page per run.

The page holds the run's configuration, its final metrics, every plot in ``plots/`` embedded as
base64 PNG and any extra sections a task adds. It links to nothing outside itself, so it opens
offline and survives being mailed or copied out of the run directory. All text read from the run
is escaped; only the HTML of extra sections is inserted as given.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

from fovea.report.plots import INDEX_COLUMNS, ReportError, ordered_splits, read_metrics

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #eee; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 13px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: right; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #555; text-align: center; }
.muted { color: #888; }
summary { cursor: pointer; font-family: monospace; }
"""


def _format_value(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.1f}" if 1e3 <= abs(v) < 1e15 else f"{v:.4g}"  # no 1.235e+04 for a throughput
    return str(v)


def final_metrics(metrics: dict[str, list[dict]]) -> dict[str, dict]:
    """The last logged value of every column, per split.

    Taken column by column rather than from the last row alone, because a trainer may log
    different columns on different rows (the loss every few steps, the learning rate per epoch).
    """
    final: dict[str, dict] = {}
    for split, rows in metrics.items():
        last: dict[str, object] = {}
        for row in rows:
            for k, v in row.items():
                if v is not None and k != "split":
                    last[k] = v
        final[split] = last
    return final


def _metrics_table(metrics: dict[str, list[dict]]) -> str:
    final = final_metrics(metrics)
    columns = dict.fromkeys(c for c in INDEX_COLUMNS if c != "split")
    for rows in metrics.values():  # the file's column order
        for row in rows:
            columns.update(dict.fromkeys(row))
    names = [c for c in columns if any(c in v for v in final.values())]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["split", *names])
    body = []
    for split in ordered_splits(list(final)):
        cells = "".join(f"<td>{html.escape(_format_value(final[split].get(c)))}</td>" for c in names)
        body.append(f"<tr><td>{html.escape(split)}</td>{cells}</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _json_block(path: Path) -> str:
    """A JSON file, pretty-printed inside a <details> so a long config does not bury the metrics."""
    name = html.escape(path.name)
    if not path.is_file():
        return f'<p class="muted">No {name}.</p>'
    try:
        text = json.dumps(json.loads(path.read_text(encoding="utf-8")), indent=2, ensure_ascii=False)
    except (OSError, ValueError) as e:
        return f'<p class="muted">Could not read {name}: {html.escape(str(e))}</p>'
    return f"<details><summary>{name}</summary>\n<pre>{html.escape(text)}</pre>\n</details>"


def _figures(plot_dir: Path) -> str:
    pngs = sorted(plot_dir.glob("*.png")) if plot_dir.is_dir() else []
    if not pngs:
        return '<p class="muted">No plots.</p>'
    out = []
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        name = html.escape(png.name)
        out.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{name}">'
            f"<figcaption>{name}</figcaption></figure>"
        )
    return "\n".join(out)


def write_report(
    run_dir: str | Path,
    title: str | None = None,
    sections: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write ``<run_dir>/report.html`` and return its path.

    The page shows, in order: the title (the run directory's name by default), ``config.json``
    as pretty JSON (folded, one click to open), the final metrics (last logged value of each
    column per split, from ``metrics.csv``), every ``plots/*.png`` sorted by name with its file
    name as caption, the extra ``sections`` as (heading, html) pairs, then ``model.json`` when
    the run exported a model. Headings and everything read from the run are escaped; a
    section's html is trusted and inserted as is, so a task escapes any text it puts there.
    Missing files are noted, not fatal: a report of a run that crashed early is still worth
    having. The file is written atomically.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"Run directory not found: '{run_dir}'. Expected a directory such as runs/<name>.")
    title = run_dir.resolve().name if title is None else title

    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.is_file():
        metrics_html = _metrics_table(read_metrics(metrics_csv))
    else:
        metrics_html = '<p class="muted">No metrics.csv.</p>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">Run directory: {html.escape(str(run_dir))}</p>',
        "<h2>Configuration</h2>",
        _json_block(run_dir / "config.json"),
        "<h2>Final metrics</h2>",
        metrics_html,
        "<h2>Plots</h2>",
        _figures(run_dir / "plots"),
    ]
    for heading, body in sections or []:
        parts += [f"<h2>{html.escape(heading)}</h2>", body]
    if (run_dir / "model.json").is_file():
        parts += ["<h2>Model</h2>", _json_block(run_dir / "model.json")]
    parts += ["</body>", "</html>", ""]

    out = run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("\n".join(parts))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out
