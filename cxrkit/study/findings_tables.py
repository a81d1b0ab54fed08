"""The numbers behind the report's findings, read from the tables the steps wrote (``tables/*.csv``),
never from the headline strings. Each reader returns None when its table is absent or unreadable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cxrkit.data.tables import check_keys
from cxrkit.study.comparison import comparisons
from cxrkit.study.config import StudyConfig

PAIRED = "ablation_paired_differences.csv"  #: 05: paired bootstrap differences
TEST_SUMMARY = "ablation_test_summary.csv"  #: 05: test macro AUC per variant, CI, oracle
SEED_PAIRED = "seed_replicates_paired.csv"  #: 05 with several training seeds: CIs over seeds and test
FINAL = "final_test_auc.csv"  #: 06: the final test table (fallback for the AUCs)
CALIBRATION = "calibration_overview.csv"  #: 08: macro and pooled ECE per variant and recalibration
OPERATING = "operating_points.csv"  #: 08: the main variant's thresholds and their test rates
EXTERNAL_MACRO = "external_macro_auc.csv"  #: 07: macro AUC per variant at the internal and external site
#: identifier columns of the report tables, read back as text
TEXT_COLUMNS = ("variant", "label", "method", "calibration", "CI covers")


def read_table(report_dir: Path, name: str, *, index_col: int | None = None,
               keys: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """``tables/<name>`` of a report, or None when it is absent, empty or not a CSV.

    Identifiers stay text: the index column and the :data:`TEXT_COLUMNS` present are read as
    written (a variant named ``NA`` or ``007`` stays ``NA`` / ``007``); every other column is
    parsed as numbers (blank = NaN).

    Args:
        report_dir: the study's report folder.
        name: the table's file name under ``tables/``.
        index_col: 0 to make the first column the (unique) index.
        keys: columns that together name one row (checked like the index).

    Raises:
        DataError: an index value or a ``keys`` combination on several rows, naming the file, the
            keys and their CSV lines.
    """
    path = report_dir / "tables" / name
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
        text = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (ValueError, pd.errors.ParserError):  # EmptyDataError is a ValueError
        return None
    ids = [c for c in df.columns if c in TEXT_COLUMNS or (index_col == 0 and c == df.columns[0])]
    for col in ids:
        df[col] = text[col].to_numpy()
    key_cols = [df.columns[0]] if index_col == 0 else [c for c in keys if c in df.columns]
    if key_cols:
        check_keys(df[key_cols].astype(str).agg(" / ".join, axis=1), path, " / ".join(map(str, key_cols)))
    return df.set_index(df.columns[0]).rename_axis(None) if index_col == 0 else df


def paired_differences(report_dir: Path, cfg: StudyConfig) -> pd.DataFrame | None:
    """The test-ensemble comparisons of 05, in :func:`comparisons` order.

    Returns:
        Index ``(a, b)`` (the difference is b - a); columns ``diff``, ``low``, ``high``, ``p_value``
        and, where 05 wrote them, ``diff (no TTA)``, ``low (no TTA)``, ``high (no TTA)``. None
        when 05's table is missing or holds none of the study's comparisons.
    """
    df = read_table(report_dir, PAIRED, index_col=0)
    if df is None or not {"diff", "low", "high"} <= set(df.columns):
        return None
    rows = {}
    for a, b in comparisons(cfg):
        key = f"{b} - {a}, test ensemble"
        if key not in df.index:
            continue
        row = {c: df.loc[key, c] for c in ("diff", "low", "high", "p_value") if c in df.columns}
        if f"{key} (no TTA)" in df.index:
            row |= {f"{c} (no TTA)": df.loc[f"{key} (no TTA)", c] for c in ("diff", "low", "high")}
        rows[(a, b)] = row
    return pd.DataFrame.from_dict(rows, orient="index") if rows else None


def seed_paired(report_dir: Path, cfg: StudyConfig) -> pd.DataFrame | None:
    """05's comparisons over the training seeds (:func:`cxrkit.study.seeds.seed_replicates`), in
    :func:`comparisons` order; None for a study with one seed, or without 05's table.

    Returns:
        Index ``(a, b)`` (b - a); columns ``diff``, ``low``, ``high`` (the mean over seeds and the
        CI over seeds and test), ``diff (test only)``, ``low (test only)``, ``high (test only)``
        (the first seed's, test sampling only) and ``seeds``; ``attrs["seed"]``: the first seed.
    """
    if len(cfg.seed_list) < 2:
        return None
    df = read_table(report_dir, SEED_PAIRED, index_col=0)
    s0 = cfg.seed_list[0]
    cols = {"diff (mean over seeds)": "diff", "low (seeds and test)": "low", "high (seeds and test)": "high",
            **{f"{c} seed {s0} (test only)": f"{c} (test only)" for c in ("diff", "low", "high")}}
    if df is None or not set(cols) <= set(df.columns):
        return None
    rows = {(a, b): df.loc[f"{b} - {a}", list(cols)].rename(cols) for a, b in comparisons(cfg) if f"{b} - {a}" in df.index}
    if not rows:
        return None
    out = pd.DataFrame.from_dict(rows, orient="index").astype(float)
    out["seeds"] = [int(df.loc[f"{b} - {a}", "seeds"]) if "seeds" in df.columns else len(cfg.seed_list)
                    for a, b in out.index]
    out.attrs["seed"] = s0
    return out


def variant_aucs(report_dir: Path, cfg: StudyConfig) -> dict[str, Any] | None:
    """Each variant's test-ensemble macro AUC with its 95% CI, and the oracle ceiling.

    Read from 05's test summary, else from 06's final test table.

    Returns:
        ``table`` (index variant; columns ``auc``, ``low``, ``high``), ``oracle`` and
        ``marginal`` (floats, None without an oracle: real data) and ``source`` (the table's file
        name); None when neither table has the study's variants.
    """
    summary = read_table(report_dir, TEST_SUMMARY, index_col=0)
    names = cfg.variant_names
    rows_needed = {"ensemble", "ensemble 95% CI low", "ensemble 95% CI high"}
    if summary is not None and rows_needed <= set(summary.index) and set(names) <= set(summary.columns):
        table = pd.DataFrame({"auc": summary.loc["ensemble", names], "low": summary.loc["ensemble 95% CI low", names],
                              "high": summary.loc["ensemble 95% CI high", names]}).astype(float)
        oracle = {k: float(summary.loc["ensemble", k]) if k in summary.columns else None
                  for k in ("oracle", "marginal oracle")}
        return {"table": table, "oracle": oracle["oracle"], "marginal": oracle["marginal oracle"], "source": TEST_SUMMARY}
    final = read_table(report_dir, FINAL, index_col=0)
    if final is None or not {"macro AUC", "95% CI low", "95% CI high"} <= set(final.columns):
        return None
    rows = {v: final.loc[k, ["macro AUC", "95% CI low", "95% CI high"]].to_numpy(float)
            for v in names for k in final.index if str(k).startswith(f"{v} (")}
    if not rows:
        return None
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["auc", "low", "high"])
    oracle = {k: float(final.loc[row, "macro AUC"]) if row in final.index else None
              for k, row in (("oracle", "oracle (perfect perception, exact)"),
                             ("marginal", "marginal oracle (no label coupling)"))}
    return {"table": table, **oracle, "source": FINAL}


def n_test_images(report_dir: Path) -> int | None:
    """The number of test images (06's final test table), or None."""
    final = read_table(report_dir, FINAL, index_col=0)
    if final is None or "images" not in final.columns or final["images"].dropna().empty:
        return None
    return int(final["images"].dropna().iloc[0])


def calibration_summary(report_dir: Path) -> pd.DataFrame | None:
    """Pooled and macro ECE per variant, as predicted and after each post-hoc recalibration (08).

    Returns:
        Index variant (in the table's order); columns ``(ECE kind, calibration)``, e.g.
        ``("ECE (pooled)", "platt")``; None without 08's table.
    """
    df = read_table(report_dir, CALIBRATION, keys=("variant", "calibration"))
    need = {"variant", "calibration", "ECE (pooled)", "ECE (macro)"}
    if df is None or not need <= set(df.columns) or df.empty:
        return None
    wide = df.pivot_table(index="variant", columns="calibration", values=["ECE (pooled)", "ECE (macro)"],
                          aggfunc="first", sort=False)
    order = [c for c in ("none", "temperature", "platt") if c in wide.columns.get_level_values(1)]
    extra = [c for c in dict.fromkeys(wide.columns.get_level_values(1)) if c not in order]
    cols = [(k, c) for k in ("ECE (pooled)", "ECE (macro)") for c in order + extra]
    return wide.reindex(columns=cols).reindex(list(dict.fromkeys(df["variant"])))


def operating_summary(report_dir: Path, target: float) -> dict[str, Any] | None:
    """The main variant's operating points (08): per method, the labels with a threshold and
    their mean test sensitivity and specificity, and how many reach ``target`` sensitivity.

    Returns:
        ``variant``, ``summary`` (index method; columns ``labels``, ``sensitivity``,
        ``specificity``, ``reach target``) and ``per_label`` (the table's rows with a threshold);
        None without 08's table.
    """
    df = read_table(report_dir, OPERATING, keys=("variant", "label", "method"))
    need = {"variant", "label", "method", "threshold", "test sensitivity", "test specificity"}
    if df is None or not need <= set(df.columns) or df.empty:
        return None
    rows = df[df["threshold"].notna()]
    summary = {}
    for method, g in rows.groupby("method", sort=False):
        summary[method] = {"labels": len(g), "sensitivity": g["test sensitivity"].mean(),
                           "specificity": g["test specificity"].mean(),
                           "reach target": int((g["test sensitivity"] >= target).sum())}
    return {"variant": str(df["variant"].iloc[0]), "summary": pd.DataFrame.from_dict(summary, orient="index"),
            "per_label": rows}


def external_macro(report_dir: Path) -> pd.DataFrame | None:
    """07's macro AUC per variant (and oracle) at both sites: columns ``internal``, ``external``,
    each with ``low``/``high``, ``change`` and the shares of the oracle; None without it."""
    df = read_table(report_dir, EXTERNAL_MACRO, index_col=0)
    need = {f"{s}{c}" for s in ("internal", "external") for c in ("", " low", " high")}
    return df if df is not None and need <= set(df.columns) and not df.empty else None
