"""Evaluation: metrics, prediction files, inference with flip TTA, fold ensembles.

* :mod:`~cxrkit.evaluation.metrics` -- per-label and macro ROC-AUC, AP/mAP, CP/CR/CF1/OP/OR/OF1.
* :mod:`~cxrkit.evaluation.bootstrap` -- patient-bootstrap CIs and the paired bootstrap.
* :mod:`~cxrkit.evaluation.calibration` -- ECE (equal-mass bins), Brier, reliability bins, temperature
  and Platt scaling per label.
* :mod:`~cxrkit.evaluation.operating_points` -- Youden and target-sensitivity thresholds; sensitivity,
  specificity, PPV and NPV at fixed thresholds on any prediction set, with bootstrap CIs.
* :mod:`~cxrkit.evaluation.subgroups` -- per-label and macro AUC within subgroups and the gaps between
  them, with patient-bootstrap CIs; age bands.
* :mod:`~cxrkit.evaluation.predictions` -- ``pred_*.csv`` and their sidecars, coupling matrices.
* :mod:`~cxrkit.evaluation.tta` -- a model's probabilities of a batch or a loader's images, with and
  without flip TTA.
* :mod:`~cxrkit.evaluation.ensemble` -- the mean of several folds' prediction files.
* :mod:`~cxrkit.evaluation.evaluate` -- ``cxrkit evaluate``: prediction files against the labels.
* :mod:`~cxrkit.evaluation.alignment` -- a model's labels aligned by name with another dataset's.
* :mod:`~cxrkit.evaluation.sources` -- the images inference runs on (a folder, a glob, a dataset),
  checked, with their fingerprint.
* :mod:`~cxrkit.evaluation.run_ensemble` -- trained runs checked to agree, their ensemble with flip
  TTA on new images, the prediction file with provenance (runs are read back by
  :mod:`cxrkit.training.trained`, whose :func:`~cxrkit.training.trained.infer` is ``cxrkit infer``).

The autocast precision both prediction and training use is :mod:`cxrkit.utils.amp`.
"""
