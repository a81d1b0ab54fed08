"""Backbones and label-coupling refiners for multilabel chest X-ray classification.

The predictor is ``image -> timm backbone -> logits z -> refiner -> refined logits z'``
(Srivastava et al. 2025, Sec. III.B-C). Refiners share one interface (:class:`Refiner`) and a
small timm-style registry (:data:`REFINERS`, :func:`register_refiner`, :func:`create_refiner`):

* ``none``: identity (the paper's ablation baseline).
* ``sparse``: learned sparse label couplings ``z' = z + alpha * sigmoid(z) @ A`` with a zero
  diagonal enforced in the forward and an L1 penalty on the off-diagonal entries of ``A``.
* ``sparse_prior``: the same, ``A`` initialised from the training labels' dependencies.
* ``sparse_centred``: the same on centred probabilities, ``z' = z + alpha * (sigmoid(z) - prevalence) @ A``
  (``prevalence``: the training fold's, saved with the weights).
* ``cooc_gcn``: the co-occurrence GCN of Rawlekar et al. (2024), cxrkit's ``row`` form or the
  authors' ``official`` one (graphs in :mod:`cxrkit.models.refiners.gcn_graph`).

A refiner that needs the training fold's labels (e.g. a co-occurrence prior) receives them once
through :meth:`Refiner.fit_prior` before training.

Backbone weights are never downloaded: ``pretrained`` is a local state-dict file.

Modules: :mod:`~cxrkit.models.backbone` (:class:`CXRModel`, :func:`create_model`),
:mod:`~cxrkit.models.weights` (local weight files) and :mod:`cxrkit.models.refiners` (one module
per refiner family). Everything public is importable from here.
"""

from cxrkit.models.backbone import CXRModel, count_parameters, create_model
from cxrkit.models.refiners import (
    REFINERS,
    CooccurrenceGCNRefiner,
    IdentityRefiner,
    Refiner,
    SparseCouplingRefiner,
    SparsePriorRefiner,
    create_refiner,
    effective_coupling,
    register_refiner,
)
from cxrkit.models.weights import load_backbone_weights

__all__ = [
    "REFINERS",
    "CXRModel",
    "CooccurrenceGCNRefiner",
    "IdentityRefiner",
    "Refiner",
    "SparseCouplingRefiner",
    "SparsePriorRefiner",
    "count_parameters",
    "create_model",
    "create_refiner",
    "effective_coupling",
    "load_backbone_weights",
    "register_refiner",
]
