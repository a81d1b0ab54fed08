"""External validation (07_external): the analyses on hand-made prediction tables with results
checked by hand, the ``external:`` block of a study (validation errors naming the key, defaults),
the plan and the step key that follows the external data."""

from __future__ import annotations

import numpy as np
import pytest
from study_helpers import fake_study, smoke_copy, tiny_gxs

from cxrkit.study import load_study, plan
from cxrkit.study.external_analysis import (
    ORACLE,
    Site,
    gain_per_label,
    gain_table,
    macro_table,
    per_label_table,
    prevalence_summary,
    prevalence_table,
)
from cxrkit.utils.params import ConfigError

LABELS = ["A", "B"]
TILE = 10  # each hand-made image repeated, every copy its own patient: the AUCs are those of the 4 rows


def _site(y, scores: dict, oracle=None) -> Site:
    y = np.tile(np.asarray(y, dtype=float), (TILE, 1))
    return Site(y, np.array([f"p{i}" for i in range(len(y))]),
                {k: np.tile(np.asarray(v, dtype=float).T, (TILE, 1)) for k, v in scores.items()},
                None if oracle is None else y * 0.8 + 0.1)


# Per label, the scores of the 4 images (columns A, B given as rows here, transposed in _site).
# Internal: A positive on images 0 and 1, B on 1 and 2.
#   base  A [.9 .4 .6 .1]: positives .9 .4 vs negatives .6 .1 -> 3 of 4 pairs = .75; B [.2 .8 .7 .3] -> 1
#         macro .875
#   cpl   A [.9 .7 .6 .1] -> 1; B -> 1; macro 1: gain .125
# External: A positive on 0 and 1, B on 0, 1 and 2.
#   base  A .75; B [.2 .8 .7 .3]: positives .2 .8 .7 vs negative .3 -> 2 of 3; macro (.75 + 2/3) / 2 = 17/24
#   cpl   A [.9 .4 .6 .1] .75; B [.4 .8 .7 .3] -> 1; macro .875: gain .875 - 17/24 = 1/6; change 1/6 - 1/8 = 1/24
Y_INT = [[1, 0], [1, 1], [0, 1], [0, 0]]
Y_EXT = [[1, 1], [1, 1], [0, 1], [0, 0]]
BASE = [[.9, .4, .6, .1], [.2, .8, .7, .3]]
INTERNAL = _site(Y_INT, {"none": BASE, "sparse": [[.9, .7, .6, .1], [.2, .8, .7, .3]]}, oracle=True)
EXTERNAL = _site(Y_EXT, {"none": BASE, "sparse": [[.9, .4, .6, .1], [.4, .8, .7, .3]]}, oracle=True)
BOOT = {"n_boot": 200, "seed": 0}


def test_macro_table_compares_the_sites_and_their_oracles():
    t = macro_table(INTERNAL, EXTERNAL, LABELS, **BOOT)
    assert list(t.index) == ["none", "sparse", ORACLE]
    assert t.loc["none", "internal"] == pytest.approx(0.875) and t.loc["none", "external"] == pytest.approx(17 / 24)
    assert t.loc["sparse", "internal"] == pytest.approx(1.0) and t.loc["sparse", "external"] == pytest.approx(0.875)
    assert t.loc["none", "change"] == pytest.approx(17 / 24 - 0.875)
    assert t.loc[ORACLE, ["internal", "external"]].tolist() == [1.0, 1.0]  # the oracle here knows the labels
    assert t.loc["none", "internal / oracle"] == pytest.approx(0.875)
    for s in ("internal", "external"):
        assert (t[f"{s} low"] <= t[s] + 1e-12).all() and (t[s] <= t[f"{s} high"] + 1e-12).all()


def test_macro_table_without_an_external_oracle_leaves_its_share_empty():
    real = Site(EXTERNAL.y, EXTERNAL.groups, EXTERNAL.scores)  # real data: no oracle
    t = macro_table(INTERNAL, real, LABELS, **BOOT)
    assert np.isnan(t.loc[ORACLE, "external"]) and t.loc[ORACLE, "internal"] == 1.0
    assert t["external / oracle"].isna().all() and t.loc["none", "internal / oracle"] == pytest.approx(0.875)


def test_per_label_table():
    t = per_label_table(INTERNAL, EXTERNAL, LABELS, **BOOT)
    assert t.index.names == ["model", "label"] and len(t) == 3 * 2
    assert t.loc[("none", "A"), "internal"] == pytest.approx(0.75)
    assert t.loc[("none", "B"), "external"] == pytest.approx(2 / 3)
    assert t.loc[("none", "B"), "change"] == pytest.approx(2 / 3 - 1)
    assert t.loc[("sparse", "B"), "external"] == pytest.approx(1.0)
    one_class = Site(np.ones_like(EXTERNAL.y), EXTERNAL.groups, EXTERNAL.scores)  # not scorable: NaN, no error
    assert per_label_table(INTERNAL, one_class, LABELS, **BOOT)["external"].isna().all()


def test_gain_table_and_its_change():
    g = gain_table(INTERNAL, EXTERNAL, LABELS, **BOOT)
    assert list(g.index) == ["sparse - none"]
    row = g.loc["sparse - none"]
    assert row["internal gain"] == pytest.approx(0.125) and row["external gain"] == pytest.approx(1 / 6)
    assert row["change"] == pytest.approx(1 / 24) and row["gain kept"] == pytest.approx((1 / 6) / 0.125)
    se = np.hypot(*[(row[f"{s} high"] - row[f"{s} low"]) / (2 * 1.959963984540054) for s in ("internal", "external")])
    assert row["change low"] == pytest.approx(1 / 24 - 1.959963984540054 * se)
    assert row["change high"] == pytest.approx(1 / 24 + 1.959963984540054 * se)
    only_base = Site(INTERNAL.y, INTERNAL.groups, {"none": INTERNAL.scores["none"]})
    assert gain_table(only_base, only_base, LABELS, **BOOT).empty


def test_gain_per_label():
    g = gain_per_label(INTERNAL, EXTERNAL, LABELS)
    assert list(g.columns) == ["sparse internal", "sparse external", "sparse change"]
    assert g.loc["A"].tolist() == pytest.approx([0.25, 0.0, -0.25])
    assert g.loc["B"].tolist() == pytest.approx([0.0, 1 / 3, 1 / 3])


def test_prevalence_shift_and_mean_probability():
    train_y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=float)  # prevalence .25, .25
    t = prevalence_table(train_y, INTERNAL, EXTERNAL, LABELS)
    assert t["train prevalence"].tolist() == [0.25, 0.25]
    assert t["internal prevalence"].tolist() == [0.5, 0.5] and t["external prevalence"].tolist() == [0.5, 0.75]
    assert t["prevalence shift"].tolist() == [0.25, 0.5]
    assert t["none mean p internal"].tolist() == pytest.approx([0.5, 0.5])
    assert t["sparse mean p internal"].tolist() == pytest.approx([0.575, 0.5])
    assert t["sparse mean p external"].tolist() == pytest.approx([0.5, 0.55])
    assert t[f"{ORACLE} mean p external"].tolist() == pytest.approx([0.5, 0.7])
    s = prevalence_summary(t)
    assert list(s.index) == ["none", "sparse", ORACLE]
    # the prevalence moves by (0, .25); the mean probabilities by (0, 0), (-.075, .05) and (0, .2)
    assert s["shift followed"].tolist() == pytest.approx([0.0, 0.05 * 0.25 / 0.0625, 0.2 * 0.25 / 0.0625])
    assert s.loc["none", "mean p - prevalence internal"] == pytest.approx(0.0)
    assert s.loc["none", "mean p - prevalence external"] == pytest.approx(-0.125)
    assert s.loc["sparse", "|mean p - prevalence| external"] == pytest.approx((0.0 + 0.2) / 2)


def test_prevalence_counts_known_entries_only():
    y = np.array([[1, np.nan], [0, 1], [np.nan, 0], [0, 0]])
    site = Site(y, np.arange(4), {"none": np.full((4, 2), 0.5)})
    t = prevalence_table(y, site, site, LABELS)
    assert t["external prevalence"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert t["none mean p external"].tolist() == pytest.approx([0.5, 0.5])


# --- the external: block of a study ------------------------------------------------------------------
@pytest.mark.parametrize("external,match", [
    ({"phantom": {"site": "site_c"}}, r"external\.phantom\.site: unknown site 'site_c'"),
    ({"phantom": {"patients": 0}}, r"external\.phantom\.patients: must be an integer >= 1"),
    ({"phantom": {"format": "jpeg"}}, r"external\.phantom\.format: 'jpeg' is not one of"),
    ({"phantom": {"site": "site_b", "sites": 2}}, r"external\.phantom: unknown key\(s\) \['sites'\]"),
    ({"data": "x", "datset": "nih"}, r"external: unknown key\(s\) \['datset'\]"),
    ({"dataset": "nih"}, r"external\.data: the external dataset's folder is needed"),
    ({"data": "x", "dataset": "nih", "dataset_options": {"viewz": ["PA"]}}, r"external\.dataset_options\.viewz"),
    ({"data": "x", "dataset": "nhi"}, r"external\.dataset: unknown dataset 'nhi'"),
    ({"phantom": {"site": "site_b"}, "dataset": "nih"}, r"external\.dataset: a phantom site is read by the gxs"),
    ({"phantom": {}, "name": "site b"}, r"external\.name: must be letters"),
    ("site_b", r"parameter 'external' must be dict \| None"),
])
def test_bad_external_blocks_are_refused_naming_the_key(tmp_path, external, match):
    with pytest.raises(ConfigError, match=match):
        load_study(smoke_copy(tmp_path, external=external)).validate()


def test_external_data_must_not_be_the_studys_own(tmp_path):
    with pytest.raises(ConfigError, match=r"external\.data: must be a folder other than the study's data"):
        load_study(smoke_copy(tmp_path, external={"data": str(tmp_path / "data"), "dataset": "gxs"})).validate()


def test_external_defaults_and_the_plan(tmp_path):
    cfg = load_study(smoke_copy(tmp_path, external={"phantom": {"patients": 30}})).validate()
    spec = cfg.external_spec
    assert spec["name"] == "site_b" and spec["data"] == "data/smoke_site_b" and spec["dataset"] == "gxs"
    assert spec["phantom"] == {"site": "site_b", "patients": 30, "size": 128, "seed": 1, "format": "png"}
    names = [s.notebook for s in plan(cfg, "p.yaml")]
    assert names[names.index("06_fold_agreement") + 1] == "07_external" and names[-2:] == ["08_trust", "09_saliency"]
    real = load_study(smoke_copy(tmp_path, external={"data": "/data/nih", "dataset": "nih",
                                                     "dataset_options": {"views": ["PA"]}})).validate()
    assert real.external_spec["name"] == "nih" and real.external_spec["phantom"] is None
    without = load_study(smoke_copy(tmp_path, external=None)).validate()
    assert without.external_spec is None and "07_external" not in [s.notebook for s in plan(without, "p.yaml")]


def test_smoke_and_default_studies_have_a_phantom_site_b():
    from cxrkit.utils.paths import project_root

    for name in ("smoke", "default"):
        spec = load_study(project_root() / "params" / f"{name}.yaml").validate().external_spec
        assert spec["phantom"]["site"] == "site_b" and spec["name"] == "site_b"


def test_the_external_step_key_follows_the_external_data(tmp_path):
    """Changing one label of the external data changes the 07_external step's key (and so the
    keys after it), not the keys before it."""
    from cxrkit.study.data import external_fingerprint
    from cxrkit.study.runner import _steps_to_run, key_text

    ext = tmp_path / "ext"
    params = fake_study(tmp_path, external={"data": str(tiny_gxs(ext)), "dataset": "gxs"})
    cfg = load_study(params).validate()
    first = external_fingerprint(cfg)
    tiny_gxs(ext, flip=3)
    second = external_fingerprint(cfg)
    assert first != second and len(first) == 16
    steps = plan(cfg, str(params))

    def keys(fp: str) -> dict[str, str]:
        todo = _steps_to_run(steps, {}, tmp_path, key_text(params), "data", force=True, only=None, progress=False,
                             step_data={"07_external": fp})
        return {s.name: k for s, k in todo}

    a, b = keys(first), keys(second)
    names = list(a)
    at = names.index("07_external")
    assert all(a[n] == b[n] for n in names[:at]) and all(a[n] != b[n] for n in names[at:])
    missing = load_study(fake_study(tmp_path, external={"data": str(tmp_path / "nowhere"), "dataset": "gxs"}))
    assert external_fingerprint(missing).startswith("unavailable (")
    assert external_fingerprint(load_study(fake_study(tmp_path))) == ""
