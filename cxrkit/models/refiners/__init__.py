"""Label refiners: backbone logits -> refined logits (paper Sec. III.B-C; Rawlekar et al. 2024).

Importing this package registers every refiner in :data:`REFINERS`: ``none``
(:mod:`~cxrkit.models.refiners.base`), ``sparse``, ``sparse_prior`` and ``sparse_centred``
(:mod:`~cxrkit.models.refiners.sparse`) and ``cooc_gcn`` (:mod:`~cxrkit.models.refiners.gcn`,
graphs in :mod:`~cxrkit.models.refiners.gcn_graph`). A new refiner is a :class:`Refiner`
subclass decorated with ``@register_refiner("name")`` in a module imported here.
"""

from cxrkit.models.refiners.base import (
    REFINERS,
    IdentityRefiner,
    Refiner,
    create_refiner,
    effective_coupling,
    register_refiner,
)
from cxrkit.models.refiners.gcn import CooccurrenceGCNRefiner
from cxrkit.models.refiners.sparse import (
    SparseCentredRefiner,
    SparseCouplingRefiner,
    SparsePriorRefiner,
)

__all__ = [
    "REFINERS",
    "CooccurrenceGCNRefiner",
    "IdentityRefiner",
    "Refiner",
    "SparseCentredRefiner",
    "SparseCouplingRefiner",
    "SparsePriorRefiner",
    "create_refiner",
    "effective_coupling",
    "register_refiner",
]
