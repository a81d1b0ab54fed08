"""External validation (07_external): the analyses on hand-made prediction tables with results
checked by hand, the ``external:`` block of a study (validation errors naming the key, defaults),
the plan and the step key that follows the external data."""

from __future__ import annotations

import numpy as np
import pytest
from study_helpers import fake_study, smoke_copy, tiny_gxs

from cxrkit.evaluation.bootstrap import paired_bootstrap_diff
from cxrkit.study import load_study, plan
from cxrkit.study.external_analysis import (
    ORACLE,
    Site,
    common_labels,
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
EXTERNAL_SCORES = {"none": BASE, "sparse": [[.9, .4, .6, .1], [.4, .8, .7, .3]]}
EXTERNAL = _site(Y_EXT, EXTERNAL_SCORES, oracle=True)
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
    assert row["note"] == "" and "one training seed" in row["CI covers"]
    # the change's CI: the percentile interval of external replicate i - internal replicate i, the
    # sites resampled with different seeds (internal: seed, external: seed + 1)
    reps = [paired_bootstrap_diff(site.y, site.scores["none"], site.scores["sparse"], n_boot=200, seed=seed,
                                  groups=site.groups, return_replicates=True)["replicates"]
            for site, seed in ((INTERNAL, 0), (EXTERNAL, 1))]
    assert [row["change low"], row["change high"]] == pytest.approx(np.quantile(reps[1] - reps[0], [0.025, 0.975]))
    only_base = Site(INTERNAL.y, INTERNAL.groups, {"none": INTERNAL.scores["none"]})
    assert gain_table(only_base, only_base, LABELS, **BOOT).empty


def test_gain_change_ci_is_the_bootstrap_of_the_difference():
    """The internal gain here is the same in every replicate (A reversed -> perfect: +1, B the same
    for both: 0; macro gain 1/2), so every replicate of the change is the external replicate minus
    1/2: the change's CI is the external CI shifted by -1/2 (a normal interval from the two
    percentile widths would be symmetric about the change; the external CI here is not)."""
    y = np.asarray(Y_INT, dtype=float)
    reversed_a, perfect_a = np.where(y[:, 0] == 1, 0.25, 0.75), np.where(y[:, 0] == 1, 0.75, 0.25)
    b = [.2, .8, .7, .3]
    internal = _site(Y_INT, {"none": [reversed_a, b], "sparse": [perfect_a, b]})
    row = gain_table(internal, EXTERNAL, LABELS, **BOOT).loc["sparse - none"]
    assert row[["internal gain", "internal low", "internal high"]].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert row["change"] == pytest.approx(1 / 6 - 0.5)
    assert row["change low"] == pytest.approx(row["external low"] - 0.5)
    assert row["change high"] == pytest.approx(row["external high"] - 0.5)
    assert row["external high"] - row["external gain"] != pytest.approx(row["external gain"] - row["external low"])
    assert row["gain kept"] == pytest.approx((1 / 6) / 0.5)  # the internal CI [.5, .5] excludes 0


def test_gain_kept_only_when_the_internal_gain_is_clear_of_zero():
    """Internal: A gains 1/4 (one of A's 4 pairs fixed), B loses 1/3 (one of B's 3 pairs lost), so
    the macro gain is (1/4 - 1/3) / 2 = -1/24 and its replicates fall on both sides of 0."""
    y_int = [[1, 1], [1, 1], [0, 1], [0, 0]]  # B: 3 positives, 1 negative (row 3, .3)
    base = [[.9, .4, .6, .1], [.8, .7, .6, .3]]  # A .75 (.4 < .6), B 1
    worse = [[.9, .7, .6, .1], [.8, .7, .2, .3]]  # A 1, B 2/3 (.2 < .3)
    internal = _site(y_int, {"none": base, "sparse": worse})
    row = gain_table(internal, EXTERNAL, LABELS, **BOOT).loc["sparse - none"]
    assert row["internal gain"] == pytest.approx(-1 / 24)
    assert row["internal low"] < 0 < row["internal high"]
    assert np.isnan(row["gain kept"])  # not (1/6) / (-1/24) = -4
    assert row["external gain"] == pytest.approx(1 / 6)


def test_gain_table_keeps_a_site_whose_labels_are_too_rare_for_its_bootstrap():
    """Six labels, each with one positive patient among 100 at the external site: a replicate keeps
    all six scorable with probability about 0.63^6 (6%), under the bootstrap's 1-in-10 limit. The
    gains (perfect -> reversed: -1 on every label) stay; the CIs are NaN and the note says why."""
    names = [f"L{j}" for j in range(6)]
    y_rare = np.zeros((100, 6))
    y_rare[np.arange(6) * 7, np.arange(6)] = 1.0
    y_int = np.array([[(i + j) % 2 for j in range(6)] for i in range(60)], dtype=float)
    sites = [Site(y, np.arange(len(y)), {"none": y * 0.5 + 0.25, "sparse": 0.75 - y * 0.5}) for y in (y_int, y_rare)]
    row = gain_table(*sites, names, n_boot=50, seed=0).loc["sparse - none"]
    assert row[["internal gain", "internal low", "internal high"]].tolist() == pytest.approx([-1, -1, -1])
    assert row["external gain"] == pytest.approx(-1) and row["change"] == pytest.approx(0)
    assert np.isnan(row[["external low", "external high", "external p", "change low", "change high"]].astype(float)).all()
    assert row["note"].startswith("external: no CI (bootstrap: only") and "too rare" in row["note"]
    assert row["gain kept"] == pytest.approx(1.0)


def test_common_labels_and_the_external_validation_tables_over_them(monkeypatch):
    """B has a single class at the external site (all positive): every AUC table and the gains
    are over A alone at both sites, and B is reported as left out. Over A: none .75 at both sites,
    sparse 1 internal, .75 external (A's external scores are the baseline's)."""
    from types import SimpleNamespace

    from cxrkit.study import external as X

    y_ext = [[1, 1], [1, 1], [0, 1], [0, 1]]
    external = _site(y_ext, EXTERNAL_SCORES)
    kept, dropped = common_labels(INTERNAL, external, LABELS)
    assert kept == ["A"] and list(dropped.index) == ["B"]
    assert dropped.loc["B"].tolist() == [20, 20, 40, 0, "a single class among the known entries at external"]
    cfg = SimpleNamespace(bootstrap=200, train={"seed": 0}, external_spec={"name": "b"}, variant_names=["none", "sparse"])
    monkeypatch.setattr(X, "external_site", lambda cfg, preds: (external, SimpleNamespace(shared=LABELS)))
    monkeypatch.setattr(X, "internal_site", lambda cfg, labels: INTERNAL)
    monkeypatch.setattr(X, "train_labels", lambda cfg, labels: np.asarray(Y_INT, dtype=float))
    ext = X.external_validation(cfg, {})
    assert ext["labels"] == ["A"] and list(ext["dropped"].index) == ["B"]
    assert ext["labels_note"] == ("AUC tables over the 1 label(s) scorable at both sites; left out: "
                                  "B (a single class among the known entries at external)")
    macro = ext["macro"]
    assert macro.loc["none", ["internal", "external", "change"]].tolist() == pytest.approx([0.75, 0.75, 0.0])
    assert macro.loc["sparse", ["internal", "external", "change"]].tolist() == pytest.approx([1.0, 0.75, -0.25])
    gain = ext["gain"].loc["sparse - none"]
    assert gain[["internal gain", "external gain", "change"]].tolist() == pytest.approx([0.25, 0.0, -0.25])
    assert list(ext["per_label"].index.get_level_values("label").unique()) == ["A"]
    assert list(ext["gain_per_label"].index) == ["A"] and list(ext["prevalence"].index) == LABELS
    assert ext["sites"]["labels scored"].tolist() == [1, 1] and ext["sites"]["labels dropped"].tolist() == [1, 1]


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
