"""The findings section that opens a study's report: the question each comparison answers with
its test macro AUC difference and CI (and a forest plot), each variant's AUC against the oracle
ceiling, calibration, operating points, an external site when ``07_external`` ran, and what
the CIs cover. Built from the steps' tables (:mod:`cxrkit.study.findings_tables`); a step that
has not run (or failed) leaves a note, never an error."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrkit.study import findings_tables as T
from cxrkit.study.config import StudyConfig
from cxrkit.study.outputs import step_outputs

FOREST = Path("figures") / "findings" / "paired_differences.png"  #: the forest plot, in the report folder
EXTERNAL = "07_external"  #: the external-site step (its headlines: ``external_macro_auc_<variant>``, ...)

#: what each refiner is, in words
REFINER_WORDS = {
    "none": "no label coupling",
    "sparse": "the learned sparse label coupling",
    "sparse_prior": "the sparse coupling initialised from the co-occurrence prior",
    "sparse_centred": "the learned sparse coupling of each label's departure from its training prevalence",
    "cooc_gcn": "the co-occurrence GCN",
}

esc = html.escape


def num(x: Any, digits: int = 4, sign: bool = False) -> str:
    """``x`` rounded for display (``-`` for a missing value)."""
    if x is None or (isinstance(x, float | np.floating) and np.isnan(x)):
        return "-"
    if not isinstance(x, int | float | np.number):
        return esc(str(x))
    return f"{float(x) + 0.0:{'+' if sign else ''}.{digits}f}"


def with_ci(est: Any, low: Any, high: Any, digits: int = 4, sign: bool = False) -> str:
    """``est [low, high]`` rounded."""
    return f"{num(est, digits, sign)} [{num(low, digits, sign)}, {num(high, digits, sign)}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of ready-made (escaped) cells; each row's first cell is its header."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(f"<tr><th scope='row'>{r[0]}</th>{''.join(f'<td>{c}</td>' for c in r[1:])}</tr>" for r in rows)
    return f"<table class='num'><tr>{head}</tr>{body}</table>"


def link(kind: str, name: str) -> str:
    """A link to ``<kind>/<name>`` of the report (a table, a notebook page)."""
    return f"<a href='{esc(kind)}/{esc(name)}'>{esc(Path(name).stem)}</a>"


def variant_words(cfg: StudyConfig, name: str) -> str:
    """``name`` with what it is (its refiner in words and its own training parameters)."""
    spec = cfg.variant_specs().get(name, {"refiner": name})
    words = REFINER_WORDS.get(spec["refiner"], f"refiner {spec['refiner']}")
    own = ", ".join(f"{k} = {v}" for k, v in spec.items() if k not in ("name", "refiner"))
    return f"<code>{esc(name)}</code> ({esc(words)}{', ' + esc(own) if own else ''})"


def missing(state: dict[str, Any], step: str, what: str, lacking: str = "table") -> str:
    """The note that replaces a section whose step has not run, failed, or wrote no ``lacking``."""
    entry = state.get(step)
    if entry is None:
        why = "has not run yet"
    elif entry.get("status") == "ok":
        why = f"wrote no {esc(lacking)} for it (re-run the step)"
    else:
        why = f"is {esc(str(entry.get('status')))}" + (f": {esc(str(entry['error']))}" if entry.get("error") else "")
    where = link("notebooks", f"{step}.html") if entry is not None else f"<code>{esc(step)}</code>"
    return f"<p class='note'>{esc(what)}: not available, {where} {why}.</p>"


def ci_coverage(cfg: StudyConfig) -> str:
    """One line on what the CIs cover, from the study's parameters (bootstrap, training seeds) and,
    with several seeds, which of the comparisons' two CIs is which."""
    seeds = cfg.seeds or cfg.train.get("seeds")
    sampling = (f"the sampling of the test images, by a patient bootstrap ({cfg.bootstrap} replicates: "
                "patients drawn with replacement, each with all of its images)")
    if isinstance(seeds, list | tuple) and len(seeds) > 1:
        paired = T.read_table(cfg.report_dir, T.PAIRED, index_col=0)
        said = sorted({str(c) for k, c in paired["CI covers"].items() if str(k).endswith("test ensemble")}
                      if paired is not None and "CI covers" in paired.columns else [])
        seed_text = (f"each variant is trained with {len(seeds)} training seeds ({', '.join(map(str, seeds))}); "
                     "the <code>CI covers</code> column of each table says whether its interval includes their "
                     f"variation{' (05: ' + esc('; '.join(said)) + ')' if said else ''}")
        if T.seed_paired(cfg.report_dir, cfg) is not None:
            seed_text += (f". In the comparisons, <b>seeds and test</b> is the CI over training seeds and test "
                          f"patients resampled together (its estimate the mean over the seeds), the one the answers "
                          f"use; <b>test only, seed {esc(str(seeds[0]))}</b> covers the test sampling of the first "
                          f"seed's models only")
    else:
        seed = seeds[0] if isinstance(seeds, list | tuple) and seeds else cfg.train.get("seed", 0)
        seed_text = (f"not the training: each variant is trained once per fold with one training seed "
                     f"(<code>train.seed</code> = {esc(str(seed))}), so the variation between training seeds is not in them")
    return f"<p class='ci'><b>What the 95% CIs cover:</b> {sampling}; {seed_text}.</p>"


def forest_plot(pairs: pd.DataFrame, path: Path, seeds: pd.DataFrame | None = None) -> None:
    """The paired differences (b - a) with their CIs and a zero line, saved as PNG at ``path``.

    With ``seeds`` (:func:`~cxrkit.study.findings_tables.seed_paired`) two markers per comparison:
    the CI over training seeds and test (filled) and, just below it, the first seed's test-only
    CI (open)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, (0.8 if seeds is not None else 0.55) * len(pairs) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(pairs))
    if seeds is None:
        d, lo, hi = (pairs[c].to_numpy(float) for c in ("diff", "low", "high"))
        ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="o", capsize=4, color="#1f4e79")
        xlabel = "difference in test macro AUC (95% patient-bootstrap CI)"
    else:
        s = seeds.reindex(pairs.index)
        for cols, dy, style, name in ((("diff", "low", "high"), -0.12, {"fmt": "o", "color": "#1f4e79"},
                                       f"seeds and test (mean over {int(s['seeds'].max())} seeds)"),
                                      (("diff (test only)", "low (test only)", "high (test only)"), 0.12,
                                       {"fmt": "o", "color": "#c55a11", "mfc": "white"},
                                       f"test only, seed {seeds.attrs.get('seed', '')}")):
            d, lo, hi = (s[c].to_numpy(float) for c in cols)
            ax.errorbar(d, y + dy, xerr=[d - lo, hi - d], capsize=4, label=name, **style)
        fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
        xlabel = "difference in test macro AUC (95% CI)"
    ax.axvline(0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y, [f"{b} - {a}" for a, b in pairs.index])
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_title("Paired comparisons on the test ensemble")
    fig.tight_layout(rect=(0, 0.0 if seeds is None else 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _answer(low: float, high: float) -> str:
    if low > 0:
        return "yes: higher (the CI is above 0)"
    if high < 0:
        return "no: lower (the CI is below 0)"
    return "no difference shown (the CI includes 0)"


def _question(cfg: StudyConfig, a: str, b: str) -> str:
    if a == cfg.variant_names[0]:
        return f"Does {variant_words(cfg, b)} raise the test macro AUC over the baseline, {variant_words(cfg, a)}?"
    return f"Does {variant_words(cfg, b)} beat {variant_words(cfg, a)}?"


def _comparison_rows(cfg: StudyConfig, pairs: pd.DataFrame, seeds: pd.DataFrame | None) -> tuple[list, list]:
    """The header and rows of the comparisons table; with ``seeds`` the answer is the CI over
    training seeds and test, the first seed's test-only CI beside it."""
    notta = "diff (no TTA)" in pairs.columns
    s0 = seeds.attrs.get("seed", "") if seeds is not None else None
    rows = []
    for (a, b), r in pairs.iterrows():
        row = [_question(cfg, a, b), f"{esc(b)} - {esc(a)}"]
        if seeds is not None and (a, b) in seeds.index:
            sr = seeds.loc[(a, b)]
            row += [with_ci(sr["diff"], sr["low"], sr["high"], sign=True),
                    with_ci(sr["diff (test only)"], sr["low (test only)"], sr["high (test only)"], sign=True),
                    num(r.get("p_value"), 3), _answer(sr["low"], sr["high"])]
        elif seeds is not None:
            row += ["-", with_ci(r["diff"], r["low"], r["high"], sign=True), num(r.get("p_value"), 3),
                    _answer(r["low"], r["high"]) + " (test only: no seeds-and-test CI)"]
        else:
            row += [with_ci(r["diff"], r["low"], r["high"], sign=True), num(r.get("p_value"), 3),
                    _answer(r["low"], r["high"])]
        if notta:
            row.append(with_ci(r["diff (no TTA)"], r["low (no TTA)"], r["high (no TTA)"], sign=True))
        rows.append(row)
    if seeds is None:
        header = ["question", "difference", "test macro AUC difference [95% CI]", "p", "answer"]
    else:
        n = int(seeds["seeds"].max())
        header = ["question", "difference", f"seeds and test: mean difference over {n} seeds [95% CI]",
                  f"test only, seed {esc(str(s0))}: difference [95% CI]", f"p (test only, seed {esc(str(s0))})",
                  "answer (from the seeds-and-test CI)"]
    header += ([f"without flip TTA{'' if seeds is None else f' (test only, seed {esc(str(s0))})'}"] if notta else [])
    return header, rows


def comparisons_html(cfg: StudyConfig, state: dict[str, Any]) -> str:
    """Each paired comparison of 05 on the test ensemble: question, difference with CI, answer;
    the forest plot (written to :data:`FOREST`, removed when there is nothing to plot). A study
    with several training seeds shows the CI over seeds and test (which the answer uses) beside
    the first seed's test-only one."""
    pairs = T.paired_differences(cfg.report_dir, cfg)
    plot = cfg.report_dir / FOREST
    if pairs is None:
        plot.unlink(missing_ok=True)
        if plot.parent.is_dir() and not any(plot.parent.iterdir()):
            plot.parent.rmdir()
        return missing(state, "05_ablation", "Paired comparisons")
    seeds = T.seed_paired(cfg.report_dir, cfg)
    forest_plot(pairs, plot, seeds)
    header, rows = _comparison_rows(cfg, pairs, seeds)
    more = f", {link('tables', T.SEED_PAIRED)}" if seeds is not None else ""
    return (f"{table(header, rows)}<p><a href='{FOREST.as_posix()}'><img class='forest' src='{FOREST.as_posix()}' "
            f"alt='forest plot of the paired differences'></a></p><p class='src'>Paired differences on the same test "
            f"images (fold ensemble, flip TTA). Full table, also per validation fold: {link('tables', T.PAIRED)}"
            f"{more} ({link('notebooks', '05_ablation.html')}).</p>")


def aucs_html(cfg: StudyConfig, state: dict[str, Any]) -> str:
    """Each variant's test macro AUC with its CI, the oracle ceiling and the share of it reached."""
    aucs = T.variant_aucs(cfg.report_dir, cfg)
    if aucs is None:
        return missing(state, "05_ablation", "Test macro AUC per variant")
    oracle, step = aucs["oracle"], "05_ablation" if aucs["source"] == T.TEST_SUMMARY else "06_fold_agreement"
    rows = [[variant_words(cfg, v), with_ci(r["auc"], r["low"], r["high"])]
            + ([num(r["auc"] / oracle, 3)] if oracle else []) for v, r in aucs["table"].iterrows()]
    header = ["variant", "test macro AUC [95% CI]"] + (["fraction of the oracle"] if oracle else [])
    images = T.n_test_images(cfg.report_dir)
    if oracle:
        ceiling = (f"<p><b>Oracle ceiling</b> (the phantom's exact posterior, perfect perception): {num(oracle)}"
                   + (f"; without label coupling (marginal oracle): {num(aucs['marginal'])}" if aucs["marginal"] else "")
                   + ".</p>")
    else:
        ceiling = ("<p><b>No oracle</b>: " + ("real data, whose best achievable AUC is unknown" if cfg.phantom is None
                                              else "the table has no oracle column") + ".</p>")
    where = f" on {images} test images" if images else ""
    return (f"{table(header, rows)}{ceiling}<p class='src'>Fold ensembles with flip TTA{where}. Full table: "
            f"{link('tables', aucs['source'])} ({link('notebooks', f'{step}.html')}).</p>")


def calibration_html(cfg: StudyConfig, state: dict[str, Any]) -> str:
    """Pooled and macro ECE per variant before and after post-hoc recalibration (08)."""
    cal = T.calibration_summary(cfg.report_dir)
    if cal is None:
        return missing(state, "08_trust", "Calibration")
    names = {"none": "as predicted", "temperature": "temperature", "platt": "Platt"}
    kinds = list(dict.fromkeys(k for k, _ in cal.columns))
    sub = [c for k, c in cal.columns if k == kinds[0]]
    head = ("<tr><th rowspan='2'>variant</th>" + "".join(f"<th colspan='{len(sub)}'>{esc(k)}</th>" for k in kinds)
            + "</tr><tr>" + "".join(f"<th>{esc(names.get(c, c))}</th>" for _ in kinds for c in sub) + "</tr>")
    body = "".join(f"<tr><th scope='row'>{esc(str(v))}</th>" + "".join(f"<td>{num(x, 3)}</td>" for x in r) + "</tr>"
                   for v, r in cal.iterrows())
    return (f"<table class='num'>{head}{body}</table><p class='src'>Expected calibration error of each test ensemble "
            f"({cfg.calibration_bins} equal-mass bins), as predicted and after temperature and Platt scaling fitted "
            f"on the out-of-fold validation predictions; the oracle's is the noise floor. Full tables: "
            f"{link('tables', T.CALIBRATION)}, {link('tables', 'calibration_per_label.csv')}, "
            f"{link('tables', 'calibration_maps.csv')} ({link('notebooks', '08_trust.html')}).</p>")


def _method(method: str) -> str:
    return "Youden's J" if method == "youden" else esc(method.replace(">=", " ≥ "))


def operating_html(cfg: StudyConfig, state: dict[str, Any]) -> str:
    """The main variant's operating points (08): a pooled summary per method, the labels in a fold-out."""
    ops = T.operating_summary(cfg.report_dir, cfg.target_sensitivity)
    if ops is None:
        return missing(state, "08_trust", "Operating points")
    target = f"sensitivity ≥ {cfg.target_sensitivity:.2f}"
    rows = [[_method(m), str(int(r["labels"])), num(r["sensitivity"], 2), num(r["specificity"], 2),
             f"{int(r['reach target'])} of {int(r['labels'])}"] for m, r in ops["summary"].iterrows()]
    summary = table(["threshold chosen by", "labels with a threshold", "mean test sensitivity",
                     "mean test specificity", f"labels reaching {target} on test"], rows)
    per = ops["per_label"]
    cols = [c for c in ("test sensitivity", "test specificity") if f"{c} low" in per.columns]
    detail = [[esc(str(r["label"])), _method(r["method"]), num(r["threshold"], 3)]
              + [with_ci(r[c], r[f"{c} low"], r[f"{c} high"], 2) if c in cols else num(r[c], 2)
                 for c in ("test sensitivity", "test specificity")] for _, r in per.iterrows()]
    details = table(["label", "threshold chosen by", "threshold", "test sensitivity [95% CI]",
                     "test specificity [95% CI]"], detail)
    return (f"<p>Main variant {variant_words(cfg, ops['variant'])}: thresholds chosen per label on its out-of-fold "
            f"validation predictions, scored on the test ensemble.</p>{summary}"
            f"<details><summary>per label</summary>{details}</details><p class='src'>Full table: "
            f"{link('tables', T.OPERATING)} ({link('notebooks', '08_trust.html')}).</p>")


def _external_table(cfg: StudyConfig, macro: pd.DataFrame) -> str:
    """07's macro AUC table: each variant (and the oracle) at the internal and the external site."""
    share = "external / oracle" in macro.columns and macro["external / oracle"].notna().any()
    rows = [[variant_words(cfg, str(v)) if v in cfg.variant_names else esc(str(v)),
             with_ci(r["internal"], r["internal low"], r["internal high"]),
             with_ci(r["external"], r["external low"], r["external high"]), num(r.get("change"), sign=True)]
            + ([num(r["external / oracle"], 3)] if share else []) for v, r in macro.iterrows()]
    header = ["variant", "internal test macro AUC [95% CI]", "external macro AUC [95% CI]", "change"]
    return table(header + (["external / oracle"] if share else []), rows)


def external_html(cfg: StudyConfig, state: dict[str, Any], heads: dict[str, Any]) -> str:
    """The external-site block (07's macro AUC table, else its headlines; its other headlines and
    tables); empty when the study has no ``07_external`` step."""
    blocks, prefix = [], "external_macro_auc_"
    for step in [s for s in state if s.startswith(EXTERNAL)]:
        metrics = heads.get(step) or {}
        macro = T.external_macro(cfg.report_dir) if state[step].get("status") == "ok" else None
        if macro is None and (state[step].get("status") != "ok" or not metrics):
            blocks.append(missing(state, step, "External site", "headline numbers"))
            continue
        if macro is not None:
            body = _external_table(cfg, macro)
            other = {k: v for k, v in metrics.items() if not k.startswith(prefix) and k != "external_oracle"}
        else:
            rows = [[variant_words(cfg, k[len(prefix):]) if k[len(prefix):] in cfg.variant_names
                     else esc(k[len(prefix):]), num(v)] for k, v in metrics.items() if k.startswith(prefix)]
            body = table(["variant", "external macro AUC"], rows) if rows else ""
            other = {k: v for k, v in metrics.items() if not k.startswith(prefix)}
        site = (getattr(cfg, "external", None) or {}).get("name", "")
        tables = step_outputs(cfg.report_dir, [step])["tables"]
        blocks.append((f"<p>Site <code>{esc(str(site))}</code>: every variant's fold ensemble applied unchanged.</p>"
                       if site else "") + body
                      + (f"<p>{'<br>'.join(f'{esc(k)}: {num(v)}' for k, v in other.items())}</p>" if other else "")
                      + f"<p class='src'>Tables: {', '.join(link('tables', t) for t in tables) or 'none'} "
                        f"({link('notebooks', f'{step}.html')}).</p>")
    return "".join(blocks)


def findings_html(cfg: StudyConfig, state: dict[str, Any], heads: dict[str, Any]) -> str:
    """The findings section of ``reports/<name>/index.html``: what the CIs cover, then one block per
    question; a block whose tables are missing is a note, and one that cannot be read says why."""
    sections: list[tuple[str, Callable[[], str]]] = [
        ("Comparisons: the answer to each question", lambda: comparisons_html(cfg, state)),
        ("Test macro AUC and the oracle ceiling", lambda: aucs_html(cfg, state)),
        ("Calibration", lambda: calibration_html(cfg, state)),
        ("Operating points", lambda: operating_html(cfg, state)),
        ("External site", lambda: external_html(cfg, state, heads)),
    ]
    parts = []
    for title, build in sections:
        try:
            body = build()
        except Exception as exc:  # noqa: BLE001 -- the index is written after failures too; one block never stops it
            body = f"<p class='note'>Could not be summarised: {esc(type(exc).__name__)}: {esc(str(exc))}</p>"
        if body:
            parts.append(f"<h3>{esc(title)}</h3>{body}")
    return f"<section id='findings'><h2>Findings</h2>{ci_coverage(cfg)}{''.join(parts)}</section>"
