"""The single-format loaders by name: what ``dataset:`` names, and what a ``merged`` dataset's
sources may be (:mod:`cxrkit.data.datasets.merged`)."""

from __future__ import annotations

from cxrkit.data.datasets.base import CXRDataset
from cxrkit.data.datasets.chexpert import CheXpert
from cxrkit.data.datasets.gxs import GrandXRaySlam
from cxrkit.data.datasets.mimic import MIMICCXRJPG
from cxrkit.data.datasets.nih import NIHChestXray14
from cxrkit.data.datasets.padchest import PadChest
from cxrkit.data.datasets.vindr import VinDrCXR

#: Format name -> loader class, one per real source format.
FORMATS: dict[str, type[CXRDataset]] = {
    cls.name: cls for cls in (GrandXRaySlam, CheXpert, NIHChestXray14, MIMICCXRJPG, PadChest, VinDrCXR)
}
