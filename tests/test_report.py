"""The study report's findings section, from hand-made tables with the columns the notebooks
write: it comes first, shows the CIs rounded, draws the forest plot, says what the CIs cover,
and a step that has not run (or failed) leaves a note, never an error."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from study_helpers import fake_study, smoke_copy

from cxrkit.study import findings as findings_module
from cxrkit.study import load_study, plan, write_index
from cxrkit.study.display import short_float
from cxrkit.study.findings import FOREST, findings_html

COVERS = "test-set sampling (patient bootstrap); one training seed per variant"


def _paired(variants: list[str]) -> pd.DataFrame:
    """05's paired differences: the test rows (with and without TTA) and a validation row."""
    base, rows = variants[0], {}
    pairs = [(base, v) for v in variants[1:]] + ([("cooc_gcn", "sparse")] if {"sparse", "cooc_gcn"} <= set(variants) else [])
    for i, (a, b) in enumerate(pairs):
        d = 0.0123456 * (i + 1)
        rows[f"{b} - {a}, fold 0 (val)"] = [d, d - 0.05, d + 0.05, 0.5, 0, COVERS.replace("test", "validation")]
        rows[f"{b} - {a}, test ensemble"] = [d, d - 0.0111111, d + 0.0111111, 0.0421, 3, COVERS]
        rows[f"{b} - {a}, test ensemble (no TTA)"] = [d / 2, d / 2 - 0.02, d / 2 + 0.02, 0.3, 3, COVERS]
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["diff", "low", "high", "p_value", "replicates_rejected", "CI covers"])


def _summary(variants: list[str], oracle: float | None) -> pd.DataFrame:
    """05's test summary: ensemble AUC and its CI per variant (and the oracle on the phantom)."""
    cols = {v: [0.7 + 0.01 * i, 0.65 + 0.01 * i, 0.75 + 0.01 * i] for i, v in enumerate(variants)}
    if oracle is not None:
        cols |= {"oracle": [oracle] * 3, "marginal oracle": [0.81] * 3}
    return pd.DataFrame(cols, index=["ensemble", "ensemble 95% CI low", "ensemble 95% CI high"])


def _calibration(variants: list[str]) -> pd.DataFrame:
    rows = [{"variant": v, "calibration": c, "ECE (macro)": 0.3 - 0.1 * j, "ECE (pooled)": 0.25 - 0.1 * j,
             "Brier (macro)": 0.2, "Brier (pooled)": 0.2, "bins": 10}
            for v in variants for j, c in enumerate(("none", "temperature", "platt"))]
    return pd.DataFrame(rows)


def _operating_points() -> pd.DataFrame:
    rows = []
    for label, sens in (("Atelectasis", 0.8), ("Edema", 0.95)):
        for method in ("youden", "sensitivity>=0.90"):
            rows.append({"variant": "sparse", "label": label, "method": method, "threshold": 0.51234,
                         "test sensitivity": sens, "test sensitivity low": sens - 0.2, "test sensitivity high": 1.0,
                         "test specificity": 0.6, "test specificity low": 0.5, "test specificity high": 0.7})
    return pd.DataFrame(rows)


def _report(params: Path, oracle: float | None = None, status: str = "ok", tables: bool = True):
    """A study's report folder with steps.json (every step ``status``) and, with ``tables``, the
    tables of 05, 06 and 08 written as the notebooks write them."""
    cfg = load_study(params)
    out = cfg.report_dir
    (out / "tables").mkdir(parents=True, exist_ok=True)
    steps = {st.name: {"notebook": st.notebook, "parameters": st.parameters, "status": status, "seconds": 1.0}
             for st in plan(cfg, str(params))}
    if status == "failed":
        steps["05_ablation"]["error"] = "cell 4: ValueError: boom"
    (out / "steps.json").write_text(json.dumps(steps))
    if tables:
        names = cfg.variant_names
        _paired(names).to_csv(out / "tables" / "ablation_paired_differences.csv", float_format="%.6g")
        _summary(names, oracle).to_csv(out / "tables" / "ablation_test_summary.csv", float_format="%.6g")
        _calibration(names).to_csv(out / "tables" / "calibration_overview.csv", index=False)
        _operating_points().to_csv(out / "tables" / "operating_points.csv", index=False)
    return cfg


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_findings_come_first_with_rounded_cis_and_a_forest_plot(tmp_path):
    cfg = _report(smoke_copy(tmp_path, external=None), oracle=0.9226708)
    page = write_index(cfg).read_text()
    assert page.index("<section id='findings'>") < page.index("<h2>Notebooks</h2>")
    assert page.count("<h2>") >= 2 and page.index("<h2>") == page.index("<h2>Findings</h2>")
    findings = page[page.index("<section id='findings'>"):page.index("</section>")]
    text = _text(findings)
    # sparse - none: 0.0123456 [0.0012345, 0.0234567], 4 decimals with a sign; cooc_gcn - none twice that
    assert "sparse - none +0.0123 [+0.0012, +0.0235]" in text and "+0.0247 [+0.0136, +0.0358]" in text
    assert "yes: higher" in text and "raise the test macro AUC over the baseline" in text
    assert "Does sparse (the learned sparse label coupling) beat cooc_gcn (the co-occurrence GCN)?" in text
    assert "l1_lambda = 0.0" in text  # smoke's sparse_l0 variant says what it is
    assert "0.0246912" not in findings  # rounded, not the CSV's digits
    assert (cfg.report_dir / FOREST).is_file() and f"src='{FOREST.as_posix()}'" in findings
    # AUCs with CIs, the oracle ceiling and the fraction of it
    assert "0.7000 [0.6500, 0.7500]" in text and "Oracle ceiling" in text and "0.9227" in text
    assert "fraction of the oracle" in text and f"{0.7 / 0.9226708:.3f}" in text
    assert "What the 95% CIs cover" in text and "one training seed" in text and "200 replicates" in text
    assert "0.250 0.150 0.050" in text  # pooled ECE: as predicted, temperature, Platt
    assert "1 of 2" in text and "Youden's J" in text and "0.88" in text  # operating points, pooled
    for table in ("ablation_paired_differences.csv", "calibration_overview.csv", "operating_points.csv"):
        assert f"href='tables/{table}'" in findings
    assert "External site" not in text  # no 07_external step in this study


def test_real_data_says_no_oracle(tmp_path):
    cfg = _report(fake_study(tmp_path))
    text = _text(write_index(cfg).read_text())
    assert "No oracle : real data" in text and "fraction of the oracle" not in text
    assert "sparse - cooc_gcn" in text


def test_missing_steps_leave_notes_not_errors(tmp_path):
    cfg = load_study(fake_study(tmp_path))
    page = write_index(cfg).read_text()  # no steps.json, no tables: nothing has run
    text = _text(page)
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Notebooks</h2>")
    assert "Paired comparisons: not available, 05_ablation has not run yet" in text
    assert "Calibration: not available, 08_trust has not run yet" in text
    assert not (cfg.report_dir / FOREST).exists() and not (cfg.report_dir / "figures").exists()
    # a forest plot of an earlier run goes when its table goes
    _report(fake_study(tmp_path))
    write_index(cfg)
    assert (cfg.report_dir / FOREST).is_file()
    (cfg.report_dir / "tables" / "ablation_paired_differences.csv").unlink()
    write_index(cfg)
    assert not (cfg.report_dir / FOREST).exists() and not (cfg.report_dir / FOREST).parent.exists()


def test_failed_step_and_unreadable_table(tmp_path):
    cfg = _report(fake_study(tmp_path), status="failed", tables=False)
    (cfg.report_dir / "tables" / "ablation_test_summary.csv").write_text("")
    (cfg.report_dir / "tables" / "calibration_overview.csv").write_text("variant,calibration\nnone,none\n")
    text = _text(write_index(cfg).read_text())
    assert "05_ablation is failed: cell 4: ValueError: boom" in text
    assert "Calibration: not available" in text


def test_seeds_and_external_block(tmp_path):
    cfg = _report(fake_study(tmp_path))
    cfg.train["seeds"] = [0, 1, 2]
    state = {"07_external": {"notebook": "07_external", "parameters": {}, "status": "ok"}}
    heads = {"07_external": {"external_macro_auc_sparse": 0.6123456, "external_macro_auc_none": "0.60 [0.55, 0.65]",
                             "external_oracle": 0.8765432}}
    text = _text(findings_html(cfg, state, heads))
    assert "3 training seeds (0, 1, 2)" in text and "each variant is trained once" not in text
    assert f"(05: {COVERS})" in text  # what 05's table says its intervals cover
    assert "External site" in text and "0.6123" in text and "0.60 [0.55, 0.65]" in text
    assert "external_oracle: 0.8765" in text
    macro = pd.DataFrame({"internal": [0.7, 0.9], "internal low": [0.65, None], "internal high": [0.75, None],
                          "external": [0.61234, 0.85], "external low": [0.55, None], "external high": [0.66, None],
                          "change": [-0.08766, -0.05], "internal / oracle": [0.7 / 0.9, 1], "external / oracle": [0.72, 1]},
                         index=["sparse", "oracle"])
    macro.to_csv(cfg.report_dir / "tables" / "external_macro_auc.csv")  # 07's table, preferred to its headlines
    text = _text(findings_html(cfg, state, heads))
    assert "0.6123 [0.5500, 0.6600]" in text and "-0.0877" in text and "0.720" in text
    assert "external_oracle" not in text  # the oracle is a row of the table
    text = _text(findings_html(cfg, {"07_external": {**state["07_external"], "status": "failed"}}, {}))
    assert "External site: not available, 07_external is failed" in text


def test_short_float_keeps_four_significant_digits():
    assert [short_float(x) for x in (0.5435377, 60.0, 9.82143e-05, 12345.678, 1234.5)] == [
        "0.5435", "60.0", "9.821e-05", "12345.7", "1234.5"]


def test_published_notebook_hides_code(tmp_path):
    import nbformat

    from cxrkit.study.runner import _render_html

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title here"),
                                         nbformat.v4.new_code_cell("secret_code_line = 1", outputs=[
                                             nbformat.v4.new_output("stream", text="printed output")])])
    (tmp_path / "n.ipynb").write_text(nbformat.writes(nb))
    _render_html(tmp_path / "n.ipynb", tmp_path / "n.html")
    page = (tmp_path / "n.html").read_text()
    assert "Title here" in page and "printed output" in page and "secret_code_line" not in page


def test_chromium_shows_the_findings_first(tmp_path):
    from cxrkit.tools.screenshot import FLAGS, find_chromium

    try:
        exe = find_chromium()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cfg = _report(smoke_copy(tmp_path), oracle=0.92)
    page = write_index(cfg)
    res = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=1800)  # a hang guard only
    assert res.returncode == 0, res.stderr[-2000:]
    body = res.stdout[res.stdout.index("<body"):]
    first = re.search(r"<(section|h2|table)\b[^>]*>", body)
    assert first is not None and first.group(0) == '<section id="findings">'


def _seed_paired(cfg) -> pd.DataFrame:
    """05's seed_replicates_paired.csv (cxrkit.study.seeds) for seeds 0, 1, 2: the seeds-and-test CI
    of sparse - none straddles 0 while its seed-0 test-only CI is above it."""
    rows = {}
    for a, b in [(cfg.variant_names[0], v) for v in cfg.variant_names[1:]]:
        rows[f"{b} - {a}"] = {"diff (mean over seeds)": 0.0101234, "low (seeds and test)": -0.0045678,
                              "high (seeds and test)": 0.0251111, "diff seed 0": 0.0123456, "diff seed 1": 0.008,
                              "diff seed 2": 0.0100246, "diff seed 0 (test only)": 0.0123456,
                              "low seed 0 (test only)": 0.0012345, "high seed 0 (test only)": 0.0234567,
                              "seeds": 3, "CI covers": "training seed and test-set sampling"}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_several_seeds_show_both_cis_and_answer_from_the_seed_covering_one(tmp_path, monkeypatch):
    cfg = _report(fake_study(tmp_path))
    cfg.seeds = [0, 1, 2]
    _seed_paired(cfg).to_csv(cfg.report_dir / "tables" / "seed_replicates_paired.csv", float_format="%.6g")
    drawn = {}
    real = findings_module.forest_plot
    monkeypatch.setattr(findings_module, "forest_plot",
                        lambda pairs, path, seeds=None: drawn.update(seeds=seeds) or real(pairs, path, seeds))
    text = _text(findings_html(cfg, {}, {}))
    head = "seeds and test: mean difference over 3 seeds [95% CI] test only, seed 0: difference [95% CI]"
    assert head in text and "answer (from the seeds-and-test CI)" in text
    # sparse - none: seeds and test +0.0101 [-0.0046, +0.0251] (includes 0), seed 0 alone +0.0123 [+0.0012, +0.0235]
    assert "sparse - none +0.0101 [-0.0046, +0.0251] +0.0123 [+0.0012, +0.0235] 0.042 no difference shown" in text
    assert "yes: higher" not in text.split("sparse - cooc_gcn")[0]  # the test-only CI alone would have said yes
    assert "seeds and test is the CI over training seeds and test patients" in text
    assert "test only, seed 0 covers the test sampling of the first seed's models only" in text
    assert drawn["seeds"].loc[("none", "sparse"), "low"] == pytest.approx(-0.0045678)
    assert (cfg.report_dir / FOREST).is_file() and "href='tables/seed_replicates_paired.csv'" in findings_html(cfg, {}, {})
    cfg.seeds = None  # one seed: the seed table is ignored, the test-only CI answers
    text = _text(findings_html(cfg, {}, {}))
    assert "sparse - none +0.0123 [+0.0012, +0.0235] 0.042 yes: higher" in text and "seeds and test" not in text


def test_refiner_words_cover_every_refiner():
    from cxrkit.models.refiners import REFINERS

    assert set(REFINERS) <= set(findings_module.REFINER_WORDS)
    assert "prevalence" in findings_module.REFINER_WORDS["sparse_centred"]


def test_report_tables_keep_identifiers_as_text_and_refuse_repeated_keys(tmp_path):
    from cxrkit.data.tables import DataError
    from cxrkit.study import findings_tables as T

    (tmp_path / "tables").mkdir()
    rows = {"NA": [0.71, 0.69, 0.73, 0.70, 0.68, 0.72, -0.01], "007": [0.72, 0.70, 0.74, 0.71, 0.69, 0.73, -0.01]}
    cols = [f"{s}{c}" for s in ("internal", "external") for c in ("", " low", " high")] + ["change"]
    pd.DataFrame.from_dict(rows, orient="index", columns=cols).to_csv(tmp_path / "tables" / T.EXTERNAL_MACRO)
    assert T.external_macro(tmp_path).index.tolist() == ["NA", "007"]
    calib = _calibration(["NA", "007"])
    calib.to_csv(tmp_path / "tables" / T.CALIBRATION, index=False)
    assert T.calibration_summary(tmp_path).index.tolist() == ["NA", "007"]
    pd.concat([calib, calib.iloc[[4]]]).to_csv(tmp_path / "tables" / T.CALIBRATION, index=False)
    with pytest.raises(DataError, match=r"calibration_overview\.csv.*'007 / temperature' on lines 6 and 8"):
        T.calibration_summary(tmp_path)
    paired = _paired(["none", "sparse"])
    pd.concat([paired, paired.iloc[[1]]]).to_csv(tmp_path / "tables" / T.PAIRED)
    with pytest.raises(DataError, match=r"ablation_paired_differences\.csv.*'sparse - none, test ensemble'"):
        T.read_table(tmp_path, T.PAIRED, index_col=0)
