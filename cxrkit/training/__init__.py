"""Training one fold of one variant (:func:`cxrkit.training.loop.train`), in named phases, and the
finished runs read back.

* :mod:`~cxrkit.training.config` -- the run's parameters (:class:`TrainConfig`).
* :mod:`~cxrkit.training.loop` -- :func:`train`: the phases below, in order.
* :mod:`~cxrkit.training.fold` -- the fold's data, loaded and checked before any training.
* :mod:`~cxrkit.training.setup` -- model, loss, loaders, optimiser, schedule, EMA, DDP.
* :mod:`~cxrkit.training.resume` -- ``last.pt`` read back, checked and restored.
* :mod:`~cxrkit.training.epoch` -- :func:`train_one_epoch` and :func:`validate`.
* :mod:`~cxrkit.training.checkpoint` -- ``best.pt``, ``last.pt``, ``history.csv``.
* :mod:`~cxrkit.training.finish` -- the best model's predictions and coupling matrices.
* :mod:`~cxrkit.training.optim`, :mod:`~cxrkit.training.ema` -- parameter groups, LR schedule, EMA.
* :mod:`~cxrkit.training.distributed` -- devices, the torchrun process group, gathered predictions.
* :mod:`~cxrkit.training.timing` -- the seconds of each phase (``timings`` in ``metrics.json``).
* :mod:`~cxrkit.training.tracking` -- experiment tracking of a run (the ``tracking`` parameter, what
  is logged when, ``tracking.json``); :mod:`~cxrkit.training.trackers` -- its MLflow and
  TensorBoard backends.
* :mod:`~cxrkit.training.trained` -- finished runs read back from ``best.pt`` and applied to new
  images (:func:`~cxrkit.training.trained.infer`: ``cxrkit infer``).

Import from the modules (this package imports nothing, so that reading a run's parameters does
not import torch).
"""
