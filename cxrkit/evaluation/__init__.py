"""Evaluation: metrics, prediction files, inference with flip TTA, fold ensembles.

* :mod:`~cxrkit.evaluation.metrics` -- per-label and macro ROC-AUC, AP/mAP, CP/CR/CF1/OP/OR/OF1.
* :mod:`~cxrkit.evaluation.bootstrap` -- patient-bootstrap CIs and the paired bootstrap.
* :mod:`~cxrkit.evaluation.predictions` -- ``pred_*.csv`` and their sidecars, coupling matrices.
* :mod:`~cxrkit.evaluation.inference` -- probabilities of a loader's images, flip TTA, autocast.
* :mod:`~cxrkit.evaluation.ensemble` -- the mean of several folds' prediction files.
* :mod:`~cxrkit.evaluation.evaluate` -- ``cxrkit evaluate``: prediction files against the labels.
"""
