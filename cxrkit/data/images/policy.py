"""How pixel values of more than 8 bits become the kit's 8-bit grey levels: :class:`ImagePolicy`
(the options, validated like every parameter) and the maps it chooses between.

8-bit images (PNG, JPEG, ...) are kept as they are. The policy decides the rest:

* DICOM (``dicom_window``): the stored values go through the modality LUT (rescale slope and
  intercept, :func:`pydicom.pixels.apply_modality_lut`), then ``header`` (the default) applies the
  VOI the file declares: its VOI LUT sequence, else its (first) window centre and width, as a
  viewer would show the image; a file that declares neither gets the percentile window.
  ``percentile`` ignores the header's VOI and always applies the percentile window.
  MONOCHROME1 images (high values dark) are inverted afterwards.
* 16-bit greyscale PNGs (and TIFFs), which carry no window (``png16``): ``full`` (the default)
  maps the container's full range 0..65535 linearly onto 0..255 (``round(v * 255 / 65535)``),
  as torchxrayvision's PadChest loader does (``normalize(img, maxval=65535)``). It is one fixed,
  monotone map for every image, so intensities stay comparable across images, and it is exact
  for 8-bit data promoted to 16 bits (``v * 257``). An image spanning too little of the range to
  keep :data:`MIN_FULL_RANGE_LEVELS` grey levels under it (e.g. 12-bit values in a 16-bit
  container) is refused, naming ``png16: percentile``, rather than silently decoded to a handful
  of grey levels. ``percentile`` applies the percentile window instead.
* The percentile window (``percentiles``, default ``[0.5, 99.5]``): the values at those
  percentiles of the image become 0 and 255, values outside are clipped to them. It is the
  usual min-max normalisation of DICOM exports made robust to the few dead or saturated pixels
  and burned-in markers that would otherwise set the range.

Every map rounds to the nearest grey level. The policy is part of the uint8 cache's key
(:class:`cxrkit.data.pipeline.UInt8Cache`) and recorded in each run's ``provenance.json``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cxrkit.utils.params import ConfigError

#: ``dicom_window`` values: the file's VOI (else the percentile window), or always the percentile window.
DICOM_WINDOWS = ("header", "percentile")
#: ``png16`` values: the full 16-bit range, or the percentile window.
PNG16_MAPS = ("full", "percentile")
#: Fewest grey levels a 16-bit image may keep under ``png16: full`` (fewer is refused).
MIN_FULL_RANGE_LEVELS = 64


class Unusable(Exception):
    """An image the kit cannot use, with the reason (no file name: the caller adds it)."""


@dataclass(frozen=True)
class ImagePolicy:
    """How images of more than 8 bits are converted to 8 bits (see the module docstring).

    Attributes:
        dicom_window: ``header`` (VOI LUT, else window centre/width, else the percentile
            window) or ``percentile`` (always the percentile window).
        percentiles: ``(low, high)`` percentiles (0..100) of the percentile window.
        png16: ``full`` (0..65535 onto 0..255) or ``percentile`` (the percentile window).
    """

    dicom_window: str = "header"
    percentiles: tuple[float, float] = (0.5, 99.5)
    png16: str = "full"

    @classmethod
    def parse(cls, values: ImagePolicy | Mapping[str, Any] | None,
              where: str = "image_policy") -> ImagePolicy:
        """The policy of a parameter mapping; keys left out keep their defaults.

        Args:
            values: a mapping such as ``{"png16": "percentile"}``, a policy, or None (defaults).
            where: the parameter's name, for the error messages.

        Raises:
            ConfigError: naming the key, for an unknown key, a value not among the choices or
                percentiles that are not ``[low, high]`` with ``0 <= low < high <= 100``.
        """
        if values is None or isinstance(values, ImagePolicy):
            return values or cls()
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {sorted(asdict(cls()))}, got {values!r}")
        known = list(asdict(cls()))
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{where}.{key}: unknown key{hint}; known: {known}")
        for key, choices in (("dicom_window", DICOM_WINDOWS), ("png16", PNG16_MAPS)):
            if key in values and values[key] not in choices:
                raise ConfigError(f"{where}.{key}: {values[key]!r} is not one of {choices}")
        merged = {**asdict(cls()), **values}
        merged["percentiles"] = _percentiles(merged["percentiles"], f"{where}.percentiles")
        return cls(**merged)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (percentiles as a list), as written to ``provenance.json``."""
        return {"dicom_window": self.dicom_window, "percentiles": list(self.percentiles), "png16": self.png16}

    def key(self) -> str:
        """Canonical text of the policy (part of the uint8 cache's key)."""
        return json.dumps(self.as_dict(), sort_keys=True)


def _percentiles(value: Any, where: str) -> tuple[float, float]:
    """``value`` as ``(low, high)`` with ``0 <= low < high <= 100``, else ConfigError naming ``where``."""
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not ok or not 0 <= value[0] < value[1] <= 100:
        raise ConfigError(f"{where}: need [low, high] with 0 <= low < high <= 100, got {value!r}")
    return float(value[0]), float(value[1])


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly onto 0..255, clip outside, round to the nearest level.

    Args:
        values: (H, W) numbers.
        low, high: the values that become 0 and 255 (``low < high``).

    Returns:
        (H, W) uint8.
    """
    scaled = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def percentile_window(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """The percentile window: the values at ``percentiles`` become 0 and 255.

    Args:
        values: (H, W) numbers (e.g. DICOM modality values).
        percentiles: ``(low, high)`` in 0..100.

    Returns:
        (H, W) uint8.

    Raises:
        Unusable: the window is empty (both percentiles have the same value).
    """
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if not high > low:
        raise Unusable(f"the percentile window {percentiles[0]:g}-{percentiles[1]:g} % is empty (both at "
                       f"{low:g}: most pixels have one value); widen image_policy percentiles")
    return scale_to_uint8(values, low, high)


def sixteen_bit_to_uint8(values: np.ndarray, policy: ImagePolicy) -> tuple[np.ndarray, str]:
    """A 16-bit greyscale image (PNG, TIFF) in 8 bits under ``policy.png16``.

    Args:
        values: (H, W) integers in 0..65535.
        policy: the decoding policy.

    Returns:
        (H, W) uint8 and how it was mapped (``full range`` or ``percentile window``).

    Raises:
        Unusable: every pixel has one value; values outside 16 bits; under ``full``, an image
            that would keep fewer than :data:`MIN_FULL_RANGE_LEVELS` grey levels.
    """
    low, high = int(values.min()), int(values.max())
    if low == high:
        raise Unusable(f"every pixel of the 16-bit image has the value {low} (a blank image)")
    if low < 0 or high > 65535:
        raise Unusable(f"values {low}..{high} are not 16-bit (0..65535)")
    if policy.png16 == "percentile":
        return percentile_window(values, policy.percentiles), "percentile window"
    levels = round((high - low) * 255 / 65535) + 1
    if levels < MIN_FULL_RANGE_LEVELS:
        raise Unusable(f"the 16-bit image spans only {low}..{high} of 0..65535, {levels} grey levels under "
                       f"image_policy png16: full (fewer than {MIN_FULL_RANGE_LEVELS}); use png16: percentile")
    return scale_to_uint8(values, 0, 65535), "full range"
