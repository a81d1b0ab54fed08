"""The phantom's hospitals: named site presets (:data:`SITES`) and the parsing of a site given as
a name or a mapping (:func:`get_site`), for external validation (train on one hospital, test on
another).

A site (:class:`~cxrkit.phantom.model.SiteConfig`) is a population (cause priors, AP share, age),
a labeller (report-noise rates) and a scanner (:class:`~cxrkit.phantom.scanner.Scanner`). The
``default`` site is the design page's phantom (``shared/design/synthetic_cxr.md``). ``site_b`` is
a clearly shifted but learnable second hospital: an ICU-heavy population with more infection,
trauma and AP films, older patients, a labeller who misses more findings, and a darker, noisier,
blurrier scanner with a tighter field of view. Its numbers are chosen here (the design page fixes
only the default site); the exact oracle follows its label model (cause priors, report noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from cxrkit.phantom.model import CAUSE_PRIOR, DEFAULT_SITE, SiteConfig
from cxrkit.phantom.scanner import Scanner

#: The second hospital: an ICU-heavy population, a labeller with more missed findings, and a
#: darker (gamma, exposure), noisier, blurrier scanner with a tighter (90%) field of view.
SITE_B = SiteConfig(
    name="site_b",
    cause_prior={**CAUSE_PRIOR, "infection": 0.30, "critical": 0.65, "trauma": 0.08},
    ap_prob_critical=0.92,
    ap_prob_other=0.40,
    age_mean=63.0,
    age_sd=14.0,
    flip_pos_to_neg=0.10,
    flip_neg_to_pos=0.01,
    scanner=Scanner(blur=(0.55, 1.05), noise_sd=(0.03, 0.05), contrast=(0.75, 1.05), gamma=(1.1, 1.5),
                    exposure=0.85, crop=0.9),
)

#: Named sites (``cxrkit synth --site NAME``, a study's ``phantom: {site: NAME}``), default first.
SITES: dict[str, SiteConfig] = {"default": DEFAULT_SITE, "site_b": SITE_B}

_FIELDS = tuple(f.name for f in fields(SiteConfig))
_SCANNER_FIELDS = tuple(f.name for f in fields(Scanner))


def get_site(spec: str | Mapping[str, Any] | SiteConfig | None, where: str = "site") -> SiteConfig:
    """The site a name, a mapping or a :class:`SiteConfig` describes.

    A mapping starts from ``preset`` (a name in :data:`SITES`, default ``default``) and overrides
    any :class:`SiteConfig` field; ``cause_prior`` and ``scanner`` are mappings overriding only
    the causes and scanner fields they name. Its ``name`` defaults to the preset's when nothing
    else is given, else ``custom``. A record written to ``phantom.json``
    (:meth:`SiteConfig.record`) reads back to the same site.

    Args:
        spec: the site; None is the default site.
        where: how the option is called, for error messages (``site``, ``phantom.site``).

    Returns:
        The validated site.

    Raises:
        ValueError: naming the key (``<where>.<field>``, ``<where>.scanner.<field>``,
            ``<where>.cause_prior.<cause>``): an unknown preset or key, or a bad value.
    """
    if spec is None:
        return DEFAULT_SITE
    if isinstance(spec, SiteConfig):
        return spec
    if isinstance(spec, str):
        if spec not in SITES:
            raise ValueError(f"{where}: unknown site {spec!r}; known: {list(SITES)}")
        return SITES[spec]
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: must be a site name {list(SITES)} or a mapping, got {spec!r}")
    values = dict(spec)
    unknown = sorted(set(values) - {*_FIELDS, "preset"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (known: preset, {', '.join(_FIELDS)})")
    base = get_site(values.pop("preset", "default"), f"{where}.preset")
    values.setdefault("name", base.name if not values else "custom")
    if isinstance(values.get("cause_prior"), Mapping):
        values["cause_prior"] = {**base.cause_prior, **values["cause_prior"]}
    if "scanner" in values:
        values["scanner"] = _scanner(values["scanner"], base.scanner, f"{where}.scanner")
    try:
        return replace(base, **values)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None


def _scanner(spec: Any, base: Scanner, where: str) -> Scanner:
    """A scanner given as a :class:`Scanner` or a mapping overriding fields of ``base``.

    Raises:
        ValueError: naming ``<where>.<field>`` of an unknown key or a bad value.
    """
    if isinstance(spec, Scanner):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: must be a mapping of scanner fields, got {spec!r}")
    unknown = sorted(set(spec) - set(_SCANNER_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} (known: {', '.join(_SCANNER_FIELDS)})")
    try:
        return replace(base, **spec)
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
