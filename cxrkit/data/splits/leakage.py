"""Patients that cross parts of a split (a fold or the test set): reported or refused."""

from __future__ import annotations

import pandas as pd

from cxrkit.data.splits.table import SHOW, part_order, row_parts


class LeakageError(ValueError):
    """A patient appears in more than one fold, or in both test and train."""


def leakage_report(splits: pd.DataFrame) -> pd.DataFrame:
    """Patients found in more than one part (a fold or the test set), without raising.

    Returns:
        One row per crossing patient, most parts first: ``patient_id``, ``n_images``,
        ``n_parts`` and ``parts`` (e.g. ``"fold 0, test"``). Empty when nothing leaks.
        ``attrs["summary"]`` holds the number of leaking patients and their images, and the
        totals of the splits table.
    """
    frame = pd.DataFrame({"patient_id": splits["patient_id"], "part": row_parts(splits)})
    per_patient = frame.groupby("patient_id").agg(n_images=("part", "size"), n_parts=("part", "nunique"))
    report = per_patient[per_patient["n_parts"] > 1].reset_index()
    crossing = frame[frame["patient_id"].isin(report["patient_id"])].drop_duplicates()
    where = crossing.groupby("patient_id")["part"].agg(lambda p: ", ".join(sorted(p, key=part_order)))
    report["parts"] = report["patient_id"].map(where)
    report = report.sort_values(["n_parts", "patient_id"], ascending=[False, True], ignore_index=True)
    report.attrs["summary"] = {
        "patients": len(report), "images": int(report["n_images"].sum()),
        "patients_total": len(per_patient), "images_total": len(splits),
    }
    return report


def check_leakage(splits: pd.DataFrame) -> None:
    """Raise if any patient crosses folds or test/train.

    Raises:
        LeakageError: naming up to 10 crossing patients and where they appear.
    """
    report = leakage_report(splits)
    if len(report):
        where = "; ".join(f"{p!r} in {parts}" for p, parts in
                          zip(report["patient_id"][:SHOW], report["parts"][:SHOW], strict=True))
        more = f" and {len(report) - SHOW} more" if len(report) > SHOW else ""
        raise LeakageError(
            f"{len(report)} patient(s) appear in more than one fold or in both test and train "
            f"({report['n_images'].sum()} images): {where}{more}"
        )
