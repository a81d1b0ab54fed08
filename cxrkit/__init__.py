"""cxrkit: a reproducible study kit for multilabel chest X-ray classification with learned
label couplings."""

from cxrkit.labels import LABELS

__version__ = "0.1.0"
__all__ = ["LABELS", "__version__"]
