"""The parameters of one training run (:class:`TrainConfig`) and how they reach the refiner and
the loss (:func:`refiner_kwargs`, :func:`loss_kwargs`).

Parsing is strict (:func:`cxrkit.utils.params.from_dict`): unknown or misspelled keys and values
of the wrong type are refused before anything runs, naming the key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from cxrkit.utils.params import ConfigError


@dataclass
class TrainConfig:
    """Parameters of one training run (one fold, one refiner).

    Defaults are the paper's (III.C-E) except five that make the embedded phantom train on a
    CPU: ``backbone`` (timm's 0.37M-parameter ``test_resnet`` instead of ``seresnext101_32x4d``,
    trained from scratch), ``image_size`` (128 instead of 380), ``batch_size`` (32 instead of 24),
    ``epochs`` (6 instead of 3) and ``lr`` (2e-3 instead of 2e-4). ``params/paper.yaml`` sets
    the paper's values. The loss's ``loss_reduction`` (``sum``) and ``focal_grad`` (detached)
    are the official ASL's; the authors' code averages over the entries and differentiates the
    focusing weight, which ``paper.yaml`` also sets. Likewise ``ema_refiner``, ``ema_warmup``
    and ``weight_decay_all`` default to cxrkit's choices; ``paper.yaml`` sets those of the
    authors' code (``crxml/train.py``, ``crxml/models/ema.py``). Paths are resolved from the
    project root, not from the cwd.
    """

    # data
    data: str = "data/phantom"  #: dataset root folder
    dataset: str = "gxs"  #: loader name: gxs | chexpert | nih | mimic | padchest | vindr | merged
    #: the loader's options (views, uncertain policy, aggregation; a merged dataset's sources)
    dataset_options: dict = field(default_factory=dict)
    labels: list | None = None  #: label subset (default: the dataset's labels)
    splits: str = "data/phantom/folds.csv"  #: folds.csv written by `cxrkit folds`
    fold: int = 0  #: validation fold index
    on_bad_image: str = "error"  #: error | exclude (writes excluded_images.csv next to the run)
    #: how images of more than 8 bits become 8-bit (cxrkit.data.images.ImagePolicy; keys left out
    #: keep these defaults): dicom_window header (the file's VOI LUT or window, else the percentile
    #: window) | percentile; percentiles of the percentile window; png16 full (0..65535 onto 0..255)
    #: | percentile
    image_policy: dict = field(default_factory=lambda: {"dicom_window": "header", "percentiles": [0.5, 99.5],
                                                        "png16": "full"})
    # model
    backbone: str = "test_resnet"  #: any timm model name; the paper: seresnext101_32x4d
    pretrained: str | None = None  #: local weight file (no hub access; `cxrkit weights import` makes one)
    #: timm (the file's keys are the backbone's) | remap (another implementation's keys, paired with
    #: the backbone's by order, every shape checked; a torch file: safetensors does not keep the order)
    pretrained_layout: str = "timm"
    drop_rate: float = 0.4
    refiner: str = "sparse"  #: none | sparse | sparse_prior | cooc_gcn
    alpha: float = 0.3  #: coupling strength of the sparse refiners
    l1_lambda: float = 1e-3  #: L1 weight on off-diagonal couplings (sparse refiners)
    gcn_layers: int = 3  #: cooc_gcn: GCN layers (Rawlekar et al.: 3)
    gcn_hidden: int = 16  #: cooc_gcn: hidden node-feature width (Rawlekar et al.'s code, COCO: 10)
    #: cooc_gcn: ``row`` (cxrkit's: prior normalised by gcn_normalize, LeakyReLU after every layer,
    #: last layer zero-initialised so it starts as the identity) | ``official`` (Rawlekar et al.'s
    #: code: ML-GCN-style re-weighted graph with gcn_p, no activation after the last layer,
    #: uniform(+-1/sqrt(fan_out)) initialisation)
    gcn_form: str = "row"
    gcn_normalize: str = "row"  #: cooc_gcn, gcn_form row: row | sym | none normalisation of the prior
    gcn_p: float = 0.2  #: cooc_gcn, gcn_form official: re-weighting p (self-weight 1 - p, neighbours p / (1 - p))
    # loss
    loss: str = "asl"  #: asl | rasl | bce
    gamma_pos: float | None = None  #: None: the loss's own default (asl 0, rasl 1)
    gamma_neg: float | None = None  #: None: the loss's own default (asl 4, rasl 3)
    clip: float | None = None  #: None: the loss's own default (0.05)
    #: asl/rasl: gradient through the focusing weight (Srivastava et al.'s code); None: the loss's
    #: own default (False: detached, as the official ASL)
    focal_grad: bool | None = None
    #: sum (over an image's known labels, / batch size; the official ASL) | mean (over the known
    #: entries; Srivastava et al.'s code). Under mean, l1_lambda and grad_clip act L (labels) times
    #: more strongly relative to the data term than under sum.
    loss_reduction: str = "sum"
    # optimisation
    image_size: int = 128  #: the paper: 380
    batch_size: int = 32  #: the paper: 24
    eval_batch_size: int = 64  #: the paper: 2x the training batch
    epochs: int = 6  #: the paper: 3
    lr: float = 2e-3  #: the paper: 2e-4 (fine-tuning ImageNet weights)
    weight_decay: float = 1e-4
    #: AdamW decays every parameter, biases, norm layers and the coupling matrix A included
    #: (Srivastava et al.'s code, crxml/train.py); False: the weights only (cxrkit's)
    weight_decay_all: bool = False
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    amp: str = "auto"  #: auto (fp16 + loss scaling on cuda, off elsewhere) | fp16 (cuda, mps) | bf16 | off
    ema_decay: float = 0.999  #: 0 disables EMA
    #: timm ModelEmaV3 warm-up (short runs would otherwise keep the init); False: ema_decay from the
    #: first update on (Srivastava et al.'s crxml/models/ema.py)
    ema_warmup: bool = True
    #: the EMA averages the refiner too (cxrkit's); False: the backbone only, validated, kept and used
    #: for predictions with the live refiner (Srivastava et al.'s code, crxml/train.py)
    ema_refiner: bool = True
    patience: int = 3  #: early stopping on validation macro AUC
    max_nonfinite: int = 20  #: skipped non-finite steps tolerated before the run stops
    # augmentation (train only)
    rrc_scale: list = field(default_factory=lambda: [0.84, 1.0])
    hflip: float = 0.5
    rotate: float = 10.0
    color_jitter: float = 0.0  #: brightness/contrast jitter amplitude (0 = off)
    # inference
    tta: bool = True  #: horizontal-flip TTA for the saved predictions
    # runtime
    cache: bool = True  #: pre-resized uint8 cache instead of decoding every epoch
    workers: int = 0  #: DataLoader worker processes
    device: str = "auto"  #: auto | cpu | cuda | cuda:N | mps
    #: torch.compile the training forward (timm's --torchcompile): false | true (mode "default") | a
    #: mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs. Checkpoints hold
    #: the uncompiled module's weights; validation and predictions run uncompiled
    compile: bool | str = False
    #: the model and its training batches in channels-last memory format; null: on CUDA only (on a
    #: CPU faster but not bit-reproducible run to run: cxrkit.utils.memory_format)
    channels_last: bool | None = None
    seed: int = 0
    out: str = "runs/train"  #: run folder (checkpoints, predictions, provenance)
    progress: bool = True
    #: experiment tracking, off by default (cxrkit.training.tracking): {mlflow: {uri, experiment,
    #: run_name, tags}, tensorboard: {dir}}; `true` for a tracker's defaults. Rank 0 logs the
    #: parameters, history.csv per epoch, metrics.json and the provenance; needs cxrkit[tracking]
    tracking: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Check value ranges and choices; return self."""
        choices = {
            "on_bad_image": ("error", "exclude"),
            "amp": ("auto", "fp16", "bf16", "off"),
            "gcn_normalize": ("row", "sym", "none"),
            "gcn_form": ("row", "official"),
            "loss_reduction": ("sum", "mean"),
            "pretrained_layout": ("timm", "remap"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {allowed}")
        positive = ("image_size", "batch_size", "eval_batch_size", "epochs", "lr")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}: must be > 0, got {getattr(self, key)!r}")
        for key in ("weight_decay", "l1_lambda", "grad_clip", "warmup_epochs", "patience", "workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay: must be in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.hflip <= 1:
            raise ConfigError(f"hflip: must be in [0, 1], got {self.hflip!r}")
        if len(self.rrc_scale) != 2 or not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ConfigError(f"rrc_scale: need [low, high] with 0 < low <= high <= 1, got {self.rrc_scale!r}")
        if self.fold < 0:
            raise ConfigError(f"fold: must be >= 0, got {self.fold}")
        if isinstance(self.compile, str) and self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile: {self.compile!r} is not true, false or a mode of {COMPILE_MODES}")
        self._validate_combinations()
        self._validate_names()
        return self

    def _validate_combinations(self) -> None:
        """Options that only apply to one form of the GCN or one family of losses."""
        if not 0 < self.gcn_p < 1:
            raise ConfigError(f"gcn_p: must be in (0, 1), got {self.gcn_p!r}")
        if self.gcn_form == "official" and self.gcn_normalize != "row":
            raise ConfigError(f"gcn_normalize: {self.gcn_normalize!r} applies to gcn_form 'row' only; "
                              f"gcn_form 'official' builds its re-weighted graph from gcn_p")
        if self.gcn_form == "row" and self.gcn_p != type(self).gcn_p:
            raise ConfigError(f"gcn_p: {self.gcn_p!r} applies to gcn_form 'official' only")
        if self.focal_grad is not None and self.loss not in ("asl", "rasl"):
            raise ConfigError(f"focal_grad: applies to the asl and rasl losses, not {self.loss!r}")

    def _validate_names(self) -> None:
        """The dataset and its options, the image policy, the trackers, the refiner, the loss and
        the backbone exist (checked before any data is read)."""
        import timm  # here, not at the top: reading parameters (the CLI) does not import torch

        from cxrkit.data.datasets import check_dataset_options
        from cxrkit.data.images import ImagePolicy
        from cxrkit.losses import LOSSES
        from cxrkit.models import REFINERS
        from cxrkit.training.tracking import TrackingConfig

        check_dataset_options(self.dataset, self.dataset_options)
        ImagePolicy.parse(self.image_policy)
        TrackingConfig.parse(self.tracking)  # a tracker whose package is missing names the extra here

        for key, known in (("refiner", REFINERS), ("loss", LOSSES)):
            if getattr(self, key) not in known:
                raise ConfigError(f"{key}: unknown {key} {getattr(self, key)!r}; known: {sorted(known)}")
        if not timm.is_model(self.backbone):
            close = difflib.get_close_matches(self.backbone, timm.list_models(), n=5, cutoff=0.6)
            raise ConfigError(f"backbone: unknown timm model {self.backbone!r}; close names: {close}")


#: ``torch.compile`` modes ``compile`` accepts (``true`` is ``default``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: TrainConfig fields passed to each refiner's constructor (refiner argument -> config field).
REFINER_OPTIONS: dict[str, dict[str, str]] = {
    "none": {},
    "sparse": {"alpha": "alpha", "lam": "l1_lambda"},
    "sparse_prior": {"alpha": "alpha", "lam": "l1_lambda"},
    "sparse_centred": {"alpha": "alpha", "lam": "l1_lambda"},
    "cooc_gcn": {"layers": "gcn_layers", "hidden": "gcn_hidden", "normalize": "gcn_normalize",
                 "form": "gcn_form", "p": "gcn_p"},
}
#: TrainConfig fields passed to each loss (None values fall back to the loss's own defaults);
#: every loss also gets ``reduction=cfg.loss_reduction`` where it is built.
LOSS_OPTIONS: dict[str, tuple[str, ...]] = {"asl": ("gamma_pos", "gamma_neg", "clip", "focal_grad"),
                                            "rasl": ("gamma_pos", "gamma_neg", "clip", "focal_grad"), "bce": ()}


def refiner_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the configured refiner."""
    return {arg: getattr(cfg, field) for arg, field in REFINER_OPTIONS.get(cfg.refiner, {}).items()}


def loss_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Constructor arguments of the configured loss (only those set)."""
    return {k: getattr(cfg, k) for k in LOSS_OPTIONS.get(cfg.loss, ()) if getattr(cfg, k) is not None}
