"""How the study notebooks (and so their published HTML pages) show numbers: rounded for reading.
Only the display changes; the tables saved as CSV keep every digit."""

from __future__ import annotations

SIGNIFICANT = 4  #: significant digits of a float shown in a notebook table


def short_float(x: float) -> str:
    """``x`` with :data:`SIGNIFICANT` significant digits, always as a float (``60.0``, ``0.5435``,
    ``9.8e-05``, ``12345.7``), so a whole number still reads as a measured value."""
    if abs(x) >= 10**SIGNIFICANT:  # large: no exponent
        return f"{x:.1f}"
    text = f"{x:.{SIGNIFICANT}g}"
    return text if any(c in text for c in ".ein") else f"{x:.1f}"


def notebook_display() -> None:
    """In an IPython session (a notebook kernel), show pandas floats with :func:`short_float`;
    elsewhere nothing changes."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is None:
        return
    import pandas as pd

    pd.set_option("display.float_format", short_float)
