"""The study's HTML report: ``reports/<name>/index.html`` (steps, runs, figures, tables,
provenance) and ``reports/index.html`` (one section per study)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from cxrkit.study.config import StudyConfig
from cxrkit.study.findings import findings_html
from cxrkit.study.outputs import HEADLINES, read_json, step_outputs
from cxrkit.study.steps import plan
from cxrkit.utils.paths import resolve

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}.ok{color:#070}.bad{color:#b00}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px;align-items:start}
.figs img{width:100%;border:1px solid #ddd}.figs div{text-align:center;font-size:12px}
#findings{border:1px solid #9ab;background:#f7fafc;padding:0.5em 1.5em 1em;margin:1em 0 2em}
#findings h3{margin:1.2em 0 0.4em}table.num td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.num th[scope=row]{text-align:left;font-weight:normal}.note{color:#777;font-style:italic}
.src{font-size:13px;color:#444}.ci{background:#fff8e0;padding:6px 10px;border-left:4px solid #e0b000}
img.forest{max-width:700px;width:100%;border:1px solid #ddd}details{margin:0.5em 0}"""


def _headline_html(metrics: dict[str, Any] | None) -> str:
    esc = html.escape
    return "<br>".join(f"{esc(str(k))}: {v:.4f}" if isinstance(v, float) else f"{esc(str(k))}: {esc(str(v))}"
                       for k, v in (metrics or {}).items())


def _steps_table(state: dict[str, Any], heads: dict[str, Any], prefix: str = "") -> str:
    """The steps (notebook HTML link, parameters, status, seconds, headline) as an HTML table;
    links are relative to the study report folder, preceded by ``prefix``."""
    esc = html.escape
    rows = []
    for name, e in state.items():
        metrics = heads.get(name) or heads.get(e["notebook"]) if e["notebook"] != "03_train" else heads.get(name, {})
        cls = {"ok": "ok", "failed": "bad"}.get(e["status"], "")
        rows.append(f"<tr><td><a href='{esc(prefix)}notebooks/{esc(name)}.html'>{esc(name)}</a></td>"
                    f"<td><code>{esc(json.dumps(e['parameters']))}</code></td><td class='{cls}'>{esc(e['status'])}"
                    f"{'<br>' + esc(e.get('error', '')) if e.get('error') else ''}</td>"
                    f"<td>{e.get('seconds', '')}</td><td>{_headline_html(metrics)}</td></tr>")
    return ("<table><tr><th>step</th><th>parameters</th><th>status</th><th>seconds</th><th>headline</th></tr>"
            f"{''.join(rows)}</table>")


def _outputs_html(files: dict[str, list[str]], prefix: str = "") -> tuple[str, str]:
    """(figure grid, table list) of a report's figures and tables, links preceded by ``prefix``."""
    esc = html.escape
    figs = "".join(f"<div><a href='{esc(prefix)}figures/{esc(f)}'><img loading='lazy' src='{esc(prefix)}figures/{esc(f)}'>"
                   f"</a><br>{esc(Path(f).stem)}</div>" for f in files["figures"])
    tabs = "".join(f"<li><a href='{esc(prefix)}tables/{esc(t)}'>{esc(Path(t).stem)}</a></li>" for t in files["tables"])
    return f"<div class='figs'>{figs}</div>", f"<ul>{tabs}</ul>"


def write_index(cfg: StudyConfig) -> Path:
    """``reports/<name>/index.html`` (the findings first, :func:`~cxrkit.study.findings.findings_html`;
    then steps, figures, tables, headline metrics, provenance) and
    ``reports/index.html`` (every study's steps, headlines, notebooks, figures and tables;
    :func:`write_reports_index`). Only the steps of the current plan are listed."""
    out = cfg.report_dir
    out.mkdir(parents=True, exist_ok=True)
    state = read_json(out / "steps.json")
    order = [st.name for st in plan(cfg, "")]
    state = {n: state[n] for n in order if n in state}
    heads = read_json(out / HEADLINES)
    prov = read_json(out / "provenance.json")
    esc = html.escape
    run_rows = []
    for v in cfg.variant_names:
        for k in range(cfg.n_folds):
            d = cfg.train_dir(k, v)
            if not (d / "provenance.json").is_file():
                continue
            p = json.loads((d / "provenance.json").read_text())
            m = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
            g = p.get("git", {})
            cells = [v, k, p.get("params", {}).get("seed"), m.get("best_epoch", ""),
                     f"{m['best_val_macro_auc']:.4f}" if "best_val_macro_auc" in m else "unfinished",
                     f"{m['wall_seconds']:.0f}" if "wall_seconds" in m else "", p.get("host", {}).get("device"),
                     p.get("world_size", 1), p.get("data_fingerprint"),
                     f"{str(g.get('commit'))[:10]}{' (dirty)' if g.get('dirty') else ''}",
                     p.get("packages", {}).get("torch")]
            run_rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    figs, tabs = _outputs_html(step_outputs(out, list(state)))
    total = sum(e.get("seconds", 0) for e in state.values())
    git = prov.get("git", {})
    wall = ""
    if prov.get("wall_seconds_this_invocation") is not None:
        wall = f" (last invocation: {prov['wall_seconds_this_invocation'] / 60:.1f} min wall time, {prov.get('jobs', 1)} parallel job(s))"
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>cxrkit study: {esc(cfg.name)}</title>
<style>{_STYLE}</style>
</head><body><h1>cxrkit study: {esc(cfg.name)}</h1><p>{esc(cfg.description)}</p>
{findings_html(cfg, state, heads)}
<h2>Study</h2><p>Parameters: <a href="params.yaml">params.yaml</a> &middot; dataset <code>{esc(cfg.dataset)}</code> at
<code>{esc(cfg.data)}</code> &middot; {cfg.n_folds} folds ({esc(cfg.group)}-grouped MIS), variants {esc(', '.join(cfg.variant_names))}
&middot; total notebook time {total / 60:.1f} min{wall} &middot; code {esc(str(git.get('commit')))}{' (dirty)' if git.get('dirty') else ''}
&middot; {esc(prov.get('time', ''))}</p>
<h2>Notebooks</h2>{_steps_table(state, heads)}
<h2>Training runs</h2><table><tr><th>variant</th><th>fold</th><th>seed</th><th>best epoch</th>
<th>val macro AUC</th><th>wall s</th><th>device</th><th>processes</th><th>data fingerprint</th><th>code</th><th>torch</th></tr>
{''.join(run_rows)}</table><p>Each run folder (<code>{esc(str(cfg.run_dir))}</code>) holds params.json, provenance.json,
history.csv, checkpoints and predictions.</p>
<h2>Figures</h2>{figs}
<h2>Tables</h2>{tabs}
<h2>Provenance</h2><pre>{esc(json.dumps({k: prov.get(k) for k in ('python', 'packages', 'host', 'git')}, indent=1))}</pre>
</body></html>"""
    (out / "index.html").write_text(page)
    write_reports_index(resolve(cfg.reports))
    return out / "index.html"


def write_reports_index(root: str | Path) -> Path:
    """``<root>/index.html``: one section per study report in ``root`` (every folder with a
    ``steps.json``): its description and parameters, the steps with their parameters, duration,
    status and headline metrics, and links to every notebook (HTML), figure and table, relative
    to ``root``. Each study's own page stays at ``<root>/<name>/index.html``."""
    import yaml

    root = Path(root)
    esc = html.escape
    sections, contents = [], []
    for d in sorted(p for p in root.iterdir() if (p / "steps.json").is_file()):
        state, heads, prov = read_json(d / "steps.json"), read_json(d / HEADLINES), read_json(d / "provenance.json")
        params = prov.get("params") or {}
        if not params and (d / "params.yaml").is_file():
            try:
                params = yaml.safe_load((d / "params.yaml").read_text()) or {}
            except yaml.YAMLError:
                params = {}
        prefix = f"{d.name}/"
        figs, tabs = _outputs_html(step_outputs(d, list(state)), prefix)
        n_ok = sum(e.get("status") == "ok" for e in state.values())
        total = sum(e.get("seconds", 0) for e in state.values())
        variants = [v if isinstance(v, str) else v.get("name", "?") for v in params.get("variants", [])]
        when = f" &middot; last run {esc(str(prov['time']))}" if prov.get("time") else ""
        contents.append(f"<li><a href='#{esc(d.name)}'>{esc(d.name)}</a>: {esc(str(params.get('description', '')))}</li>")
        sections.append(
            f"<section id='{esc(d.name)}'><h2>{esc(d.name)}</h2><p>{esc(str(params.get('description', '')))}</p>"
            f"<p><a href='{esc(prefix)}index.html'>study page</a> &middot; <a href='{esc(prefix)}params.yaml'>params.yaml</a>"
            f" &middot; dataset <code>{esc(str(params.get('dataset', '')))}</code> at <code>{esc(str(params.get('data', '')))}</code>"
            f" &middot; {esc(str(params.get('n_folds', '')))} folds ({esc(str(params.get('group', '')))}-grouped)"
            f" &middot; variants {esc(', '.join(variants))} &middot; {n_ok} of {len(state)} steps ok"
            f" &middot; total notebook time {total / 60:.1f} min{when}</p>"
            f"<h3>Steps</h3>{_steps_table(state, heads, prefix)}<h3>Figures</h3>{figs}<h3>Tables</h3>{tabs}</section>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cxrkit reports</title><style>{_STYLE}</style>"
            f"</head><body><h1>cxrkit reports</h1><ul>{''.join(contents)}</ul>{''.join(sections)}</body></html>")
    (root / "index.html").write_text(page)
    return root / "index.html"
