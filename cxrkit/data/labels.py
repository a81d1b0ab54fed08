"""The common label vocabulary shared by every dataset loader, model and metric."""

from __future__ import annotations

#: The 14 CheXpert-style findings used by Grand X-Ray Slam, CheXpert, MIMIC-CXR and the phantom,
#: in the order of the design card. Every table and every model output uses this order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: Default label set of the kit.
LABELS: tuple[str, ...] = CHEXPERT_LABELS

#: NIH ChestX-ray14 findings, written in the common vocabulary (``Effusion`` is
#: ``Pleural Effusion``; the NIH-only findings keep their names with spaces).
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Pleural Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural Thickening",
    "Hernia",
)

#: Every label name any loader may produce.
VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(CHEXPERT_LABELS + NIH_LABELS + ("No Finding",)))

#: NIH spellings -> common vocabulary.
NIH_SYNONYMS: dict[str, str] = {
    "Effusion": "Pleural Effusion",
    "Pleural_Thickening": "Pleural Thickening",
}


def check_labels(labels: list[str] | tuple[str, ...], *, where: str = "labels") -> list[str]:
    """Return ``labels`` as a list after checking every name is in the vocabulary.

    Raises:
        ValueError: naming the unknown labels and, when close, the known spelling.
    """
    import difflib

    unknown = [lab for lab in labels if lab not in VOCABULARY]
    if unknown:
        hints = []
        for lab in unknown:
            close = difflib.get_close_matches(lab, VOCABULARY, n=1)
            hints.append(f"{lab!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{where}: unknown label name(s) {', '.join(hints)}; known: {list(VOCABULARY)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: duplicate label names in {list(labels)}")
    return list(labels)
