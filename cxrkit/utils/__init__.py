"""Foundations every layer may use: project paths, safe file writes, provenance records, strict
parameter parsing, the name registry and mixed precision.

* :mod:`cxrkit.utils.paths` -- paths resolved from the project root, never from the cwd.
* :mod:`cxrkit.utils.files` -- atomic writes, JSON, the "can I write there?" check.
* :mod:`cxrkit.utils.provenance` -- code version, packages, device; a run's provenance record.
* :mod:`cxrkit.utils.params` -- dataclass parameters from YAML/dicts, refusing unknown keys.
* :mod:`cxrkit.utils.registry` -- the name -> class registry behind the ``create_*`` factories.
* :mod:`cxrkit.utils.amp` -- the autocast dtype and context of an ``amp`` setting on a device
  (training and prediction; the one module here that imports torch when it is imported).

Nothing here imports another part of cxrkit.
"""
