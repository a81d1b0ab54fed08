"""Table I of Srivastava et al. (2025): the literature rows exactly as reported there.

The values are copied from the paper's Table I, each with the dataset it was measured on; they
are not comparable with rows measured on other data (the phantom in particular), and the
study's table labels every row with its dataset for that reason.
"""

from __future__ import annotations

import pandas as pd

#: (study, dataset, backbone / head, split / protocol, reported macro AUC)
TABLE_I: tuple[tuple[str, str, str, str, float], ...] = (
    ("Kufel et al. (2023)", "NIH ChestX-ray14", "EfficientNet + GAP + Dense/BN", "custom patient-level split", 0.8428),
    ("Xiong et al. (2025) CONVFCMAE", "NIH ChestX-ray14", "ConvNeXtV2 (77% frozen) + attentive head", "-", 0.8523),
    ("Chen et al. (2023) long-tail loss", "NIH ChestX-ray14", "CoAtNet-0-rw / EfficientNet-b5", "random 70/10/20", 0.842),
    ("Kumar et al. (2017) boosted cascade", "NIH ChestX-ray14", "DenseNet-161, C-BR", "random 80/20 (non-official)", 0.7945),
    ("Yao et al. (2017) label dependencies", "NIH ChestX-ray14", "CNN + LSTM over labels", "patient-wise", 0.798),
    ("Guan et al. (2018) AG-CNN", "NIH ChestX-ray14", "DenseNet-121 three-branch", "patient-wise 70/10/20", 0.871),
    ("Baltruschat et al. (2019)", "NIH ChestX-ray14", "ResNet-50-large-meta (from scratch)", "5x patient-level 70/10/20", 0.822),
    ("Taslimi et al. (2022) SwinCheX", "NIH ChestX-ray14", "Swin-L + MLP head", "official patient-wise split", 0.810),
    ("Srivastava et al. (2025) sparse label coupling", "Grand X-Ray Slam Div. B test", "SE-ResNeXt101 32x4d + sparse coupling",
     "3-fold MIS, EMA, AMP, flip TTA, 3-fold ensemble", 0.926030),
)


def table_i(ours: pd.DataFrame | None = None) -> pd.DataFrame:
    """The literature rows (source 'reported in Srivastava et al. 2025, Table I') followed by ``ours``
    (same columns, source 'measured by cxrkit')."""
    lit = pd.DataFrame(TABLE_I, columns=["study", "dataset", "model", "protocol", "macro AUC"])
    lit["source"] = "reported in Srivastava et al. (2025), Table I"
    if ours is None:
        return lit
    ours = ours.assign(source="measured here (cxrkit)")
    return pd.concat([lit, ours[lit.columns]], ignore_index=True)
