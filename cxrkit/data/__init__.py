"""Data: labels, image decoding, one loader per dataset format, splits, the input pipeline.

* :mod:`~cxrkit.data.labels` -- the label vocabulary.
* :mod:`~cxrkit.data.cooccurrence` -- label co-occurrence (P(n | m)) from a label matrix.
* :mod:`~cxrkit.data.tables` -- errors naming files, rows and keys; key checks; label matrix,
  data fingerprint.
* :mod:`~cxrkit.data.images` -- decoding of every format (PNG, JPEG, 16-bit PNG, DICOM;
  :func:`~cxrkit.data.images.load_image`) under an :class:`~cxrkit.data.images.ImagePolicy`, and
  the up-front image check.
* :mod:`cxrkit.data.datasets` -- the loaders (one module per format) and
  :func:`~cxrkit.data.datasets.create_dataset`.
* :mod:`cxrkit.data.splits` -- patient-grouped test split and folds, ``folds.csv``, leakage.
* :mod:`~cxrkit.data.pipeline` -- uint8 cache, seeded augmentation, samplers and loaders (torch).

Import from the modules (this package imports nothing, so that its light parts do not pull in
torch).
"""
