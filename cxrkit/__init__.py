"""cxrkit: a reproducible study kit for multilabel chest X-ray classification with learned
label couplings."""

import warnings

from cxrkit.data.labels import LABELS

# timm imports huggingface_hub, which imports tqdm.auto; in a kernel without ipywidgets that
# prints "IProgress not found" into every notebook. cxrkit's own bars use plain tqdm.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
__all__ = ["LABELS", "__version__"]
