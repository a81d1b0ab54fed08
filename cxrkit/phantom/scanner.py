"""A site's X-ray scanner as the renderer sees it (:class:`Scanner`): the ranges its per-image film
parameters are drawn from (blur, noise, contrast, gamma), an overall exposure and the field of view
(collimation / crop).

The default scanner is the design page's film (``shared/design/synthetic_cxr.md``, section 4, the
ranges of ``cxrkit.phantom.render._background``), so a default render is byte-identical to one
without a scanner. A scanner changes only the pixels, never the labels or what is drawn: the exact
oracle (perfect perception of the drawn findings) is the same for every scanner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

#: Range fields of :class:`Scanner`: name -> (smallest allowed low end, largest allowed high end).
_RANGES: dict[str, tuple[float, float]] = {
    "blur": (0.0, 4.0),
    "noise_sd": (0.0, 0.2),
    "contrast": (0.1, 3.0),
    "gamma": (0.2, 5.0),
}
#: Smallest field of view a scanner may keep (below it, drawn findings would leave the image).
MIN_CROP = 0.85


@dataclass(frozen=True)
class Scanner:
    """The film of one site's scanner.

    Each image draws its film parameters uniformly from the ranges (``rng.uniform(lo, hi)``: one
    draw each, whatever the range, so a scanner never shifts the other random draws).

    Attributes:
        blur: Gaussian blur sigma, in pixels of a 128 px image of the whole field (scaled with the
            rendered side), range (low, high). Default (0.35, 0.75).
        noise_sd: sd of the additive Gaussian pixel noise, in units of the full grey range [0, 1],
            range. Default (0.015, 0.035).
        contrast: windowing slope around density 0.3, range. Default (0.85, 1.15).
        gamma: exponent of the transfer curve (> 1 darkens the mid-tones), range. Default (0.8, 1.2).
        exposure: factor on every image's brightness after the transfer curve (< 1 darker).
            Default 1.0.
        crop: fraction of the default field of view kept, centred (1.0 the whole field; 0.9 a
            tighter collimation: the patient fills more of the image). The image is rendered on the
            whole field at side ``round(size / crop)`` and its centre ``size`` pixels are kept, so
            the kept fraction is exactly ``size / round(size / crop)``. At least :data:`MIN_CROP`.
            Default 1.0.

    Raises:
        ValueError: naming the field: a range that is not two finite numbers ``low <= high``
            inside its allowed span, an exposure outside (0, 2], a crop outside [MIN_CROP, 1].
    """

    blur: tuple[float, float] = (0.35, 0.75)
    noise_sd: tuple[float, float] = (0.015, 0.035)
    contrast: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.8, 1.2)
    exposure: float = 1.0
    crop: float = 1.0

    def __post_init__(self) -> None:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: must be a range [low, high] of two numbers, got {value!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
                raise ValueError(f"{name}: must satisfy {low:g} <= low <= high <= {high:g}, got {value!r}")
            object.__setattr__(self, name, (lo, hi))
        for name, low, high, open_low in (("exposure", 0.0, 2.0, True), ("crop", MIN_CROP, 1.0, False)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not ((low < value) if open_low else (low <= value)) or value > high:
                span = f"({low:g}, {high:g}]" if open_low else f"[{low:g}, {high:g}]"
                raise ValueError(f"{name}: must be a number in {span}, got {value!r}")
            object.__setattr__(self, name, float(value))

    def render_side(self, size: int) -> int:
        """Side (pixels) of the whole-field image whose centre ``size`` pixels are kept."""
        return size if self.crop == 1.0 else max(size, round(size / self.crop))

    def record(self) -> dict[str, Any]:
        """The scanner as JSON-ready values (ranges as lists)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


#: The design page's scanner (today's phantom).
DEFAULT_SCANNER = Scanner()
