"""PadChest's report terms written in the kit's label vocabulary, and the images its public
release is known to hold unreadable.

Source: torchxrayvision's ``PC_Dataset`` (torchxrayvision 1.5.7, ``torchxrayvision/datasets.py``),
which marks a label positive when an image's ``Labels`` text *contains* the label's name or one of
its synonyms (its ``mapping``). :data:`PADCHEST_TERMS` writes that out as exact terms of the label
file (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv``: 193 distinct terms), so every term
that sets a label is listed, with these differences from substring matching:

* ``pseudonodule`` (a nodule mimic), ``pericardial effusion`` (not pleural), ``subcutaneous
  emphysema`` (soft tissue), ``breast mass`` and ``soft tissue mass`` (not thoracic) set nothing,
  where "nodule", "effusion", "emphysema" and "mass" matched them;
* ``Support Devices`` also takes the tubes and stents torchxrayvision gives a separate ``Tube``
  label (not in the kit's vocabulary) and the central venous catheters: CheXpert's Support
  Devices covers lines, tubes and pacemakers;
* ``Lung Lesion`` (not among torchxrayvision's PadChest labels) takes the nodules, masses and
  tumours, as the mention phrases of the CheXpert labeler's ``lung_lesion`` (mass, nodule,
  cavitary lesion, tumor, carcinoma, neoplasm;
  ``stanfordmlgroup/chexpert-labeler/phrases/mention/lung_lesion.txt``);
* ``No Finding`` is the term ``normal`` (torchxrayvision has no such label): positive when
  ``normal`` comes with no other term but :data:`UNINFORMATIVE` ones and support devices (CheXpert's
  No Finding also allows support devices), negative otherwise.

Labels PadChest does not annotate (Enlarged Cardiomediastinum, Lung Opacity, Pleural Other) are
not provided. A term absent from an image's list is a negative, as in torchxrayvision; an image
whose terms are all :data:`UNINFORMATIVE` (or whose ``Labels`` cell is empty) says nothing about
any finding: all its labels are NaN.
"""

from __future__ import annotations

#: Kit label -> the PadChest terms that make it positive (exact, after stripping spaces).
PADCHEST_TERMS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis",
                    "atelectasis basal", "total atelectasis", "round atelectasis"),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation", "air bronchogram"),
    "Edema": ("pulmonary edema",),
    "Fracture": ("fracture", "rib fracture", "callus rib fracture", "vertebral fracture", "clavicle fracture",
                 "humeral fracture"),
    "Lung Lesion": ("nodule", "multiple nodules", "pulmonary mass", "mass", "lung metastasis",
                    "lepidic adenocarcinoma", "cavitation"),
    "Pleural Effusion": ("pleural effusion", "loculated pleural effusion", "loculated fissural effusion"),
    "Pneumonia": ("pneumonia", "atypical pneumonia"),
    "Pneumothorax": ("pneumothorax", "hydropneumothorax"),
    "Support Devices": ("pacemaker", "dual chamber device", "single chamber device", "electrical device",
                        "NSG tube", "endotracheal tube", "tracheostomy tube", "chest drain tube",
                        "ventriculoperitoneal drain tube", "gastrostomy tube", "nephrostomy tube", "double J stent",
                        "central venous catheter", "central venous catheter via jugular vein",
                        "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
                        "reservoir central venous catheter", "catheter"),
    "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "alveolar pattern", "consolidation", "air bronchogram"),
    "Mass": ("mass", "pulmonary mass", "mediastinal mass", "pleural mass"),
    "Nodule": ("nodule", "multiple nodules"),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("pulmonary fibrosis",),
    "Pleural Thickening": ("pleural thickening", "apical pleural thickening", "calcified pleural thickening"),
    "Hernia": ("hiatal hernia",),
}

#: The term that makes No Finding positive.
NORMAL = "normal"
#: Terms that say nothing about findings: no change since the last study, an image marked for
#: exclusion, a suboptimal study, and empty entries.
UNINFORMATIVE: frozenset[str] = frozenset({"unchanged", "exclude", "suboptimal study", ""})

_MISSING = "listed by torchxrayvision's PC_Dataset as missing from the release"
_TRUNCATED = "listed by torchxrayvision's PC_Dataset as truncated ('OSError: image file is truncated')"
_BROKEN = "listed by torchxrayvision's PC_Dataset as a broken PNG (chunk b'\\x00\\x00\\x00\\x00')"

#: ``ImageID`` -> why it is known unreadable: torchxrayvision 1.5.7's PC_Dataset list of
#: "missing files" (the first eleven without a comment there; the others with the comment
#: quoted).
PADCHEST_KNOWN_BAD: dict[str, str] = {
    **dict.fromkeys((
        "216840111366964012819207061112010307142602253_04-014-084.png",
        "216840111366964012989926673512011074122523403_00-163-058.png",
        "216840111366964012959786098432011033083840143_00-176-115.png",
        "216840111366964012558082906712009327122220177_00-102-064.png",
        "216840111366964012339356563862009072111404053_00-043-192.png",
        "216840111366964013076187734852011291090445391_00-196-188.png",
        "216840111366964012373310883942009117084022290_00-064-025.png",
        "216840111366964012283393834152009033102258826_00-059-087.png",
        "216840111366964012373310883942009170084120009_00-097-074.png",
        "216840111366964012819207061112010315104455352_04-024-184.png",
        "216840111366964012819207061112010306085429121_04-020-102.png",
    ), _MISSING),
    **dict.fromkeys((
        "216840111366964012989926673512011083134050913_00-168-009.png",
        "216840111366964012989926673512011151082430686_00-157-045.png",
    ), _BROKEN),
    **dict.fromkeys((
        "216840111366964012373310883942009152114636712_00-102-045.png",
        "216840111366964012819207061112010281134410801_00-129-131.png",
        "216840111366964012487858717522009280135853083_00-075-001.png",
        "216840111366964013686042548532013208193054515_02-026-007.png",
        "216840111366964013590140476722013058110301622_02-056-111.png",
        "216840111366964013590140476722013043111952381_02-065-198.png",
        "216840111366964013829543166512013353113303615_02-092-190.png",
        "216840111366964013962490064942014134093945580_01-178-104.png",
    ), _TRUNCATED),
}

#: ``Projection`` -> view (:mod:`cxrkit.data.views`); ``UNK`` (unknown) is a missing view.
PADCHEST_PROJECTIONS: dict[str, str | None] = {
    "PA": "PA", "AP": "AP", "AP_horizontal": "AP_SUPINE", "L": "LATERAL", "COSTAL": "COSTAL",
    "EXCLUDE": "EXCLUDE", "UNK": None,
}
