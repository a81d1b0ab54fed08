"""Tests of the phantom's sites (cxrkit.phantom.site): the default site is today's phantom byte for
byte; site_b samples its own label model, its exact oracle follows that model (brute force, Monte
Carlo), its images differ measurably while the findings stay visible; the site flows through the
CLI, a study's ``phantom:`` block and ``phantom.json``; bad values name the key."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrkit.cli import main
from cxrkit.data.labels import LABELS
from cxrkit.phantom import model
from cxrkit.phantom.files import phantom_config, phantom_tables
from cxrkit.phantom.generate import MARKER, generate
from cxrkit.phantom.model import DRAWABLE, PATHOLOGIES, PhantomConfig, SiteConfig
from cxrkit.phantom.oracle import oracle_auc, oracle_scores, population_auc, posterior, prevalences
from cxrkit.phantom.posterior import _pattern_table, _posterior_patterns, _states
from cxrkit.phantom.render import FINDINGS, render
from cxrkit.phantom.sampling import sample_studies
from cxrkit.phantom.scanner import DEFAULT_SCANNER, Scanner
from cxrkit.phantom.site import SITE_B, SITES, get_site
from cxrkit.study.config import StudyConfig
from cxrkit.study.data import prepare
from cxrkit.utils.params import ConfigError

B = PhantomConfig(site=SITE_B)


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a generated dataset but its provenance record (which holds the time)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "provenance.json"}


@pytest.fixture(scope="module")
def site_b_sample() -> pd.DataFrame:
    """20000 site_b patients (about 36000 studies)."""
    return sample_studies(20_000, seed=31, config=B)


def test_default_site_is_todays_phantom_byte_for_byte(tmp_path: Path) -> None:
    assert SiteConfig() == SITES["default"] == get_site(None) == get_site({}) == get_site({"preset": "default"})
    site = SiteConfig()
    assert site.cause_prior == model.CAUSE_PRIOR and site.scanner == DEFAULT_SCANNER
    assert (site.flip_pos_to_neg, site.flip_neg_to_pos) == (model.FLIP_POS_TO_NEG, model.FLIP_NEG_TO_POS)
    assert (site.ap_prob_critical, site.ap_prob_other) == (model.AP_PROB_CRITICAL, model.AP_PROB_OTHER)
    kw = {"n_patients": 12, "size": 48, "seed": 5, "progress": False}
    generate(tmp_path / "today", workers=1, **kw)
    generate(tmp_path / "explicit", workers=2, config=PhantomConfig(site=SiteConfig(cause_prior={})), **kw)
    a, b = _files(tmp_path / "today"), _files(tmp_path / "explicit")
    assert len(a) > 10 and a == b
    assert json.loads(a[MARKER])["site"] == SiteConfig().record()
    rng_args = (64, {"Edema": 0.7}, {"width": 1.0, "height": 1.0, "rotation": 0.0, "brightness": 1.0}, True)
    plain = render(*rng_args, np.random.default_rng(3))
    assert np.array_equal(plain, render(*rng_args, np.random.default_rng(3), Scanner()))


def test_site_b_is_deterministic_and_differs_from_the_default(tmp_path: Path) -> None:
    kw = {"n_patients": 10, "size": 40, "seed": 2, "progress": False, "config": B}
    generate(tmp_path / "a", workers=1, **kw)
    generate(tmp_path / "b", workers=2, **kw)
    a = _files(tmp_path / "a")
    assert a == _files(tmp_path / "b")
    generate(tmp_path / "d", workers=1, **{**kw, "config": PhantomConfig()})
    d = _files(tmp_path / "d")
    assert a.keys() == d.keys()
    assert all(a[k] != d[k] for k in a if k.startswith("images/"))  # another scanner
    marker = json.loads(a[MARKER])
    assert marker["site"] == SITE_B.record() and marker["site"]["name"] == "site_b"
    assert marker["model"]["cause_prior"]["critical"] == 0.65 and marker["model"]["flip_pos_to_neg"] == 0.10
    assert phantom_config(tmp_path / "a") == B


def test_site_b_sample_matches_its_exact_prevalences(site_b_sample: pd.DataFrame) -> None:
    """Observed prevalences within 4 cluster-robust sd (studies of a patient are correlated) of the
    site's exact ones, and clearly away from the default site's where the label model differs."""
    df = site_b_sample
    exact, default = prevalences(B), prevalences()
    y = df[list(LABELS)].to_numpy(dtype=float)
    n = len(y)
    moved = []
    for j, lab in enumerate(LABELS):
        resid = pd.Series(y[:, j] - exact[lab]).groupby(df["Patient_ID"].to_numpy()).sum()
        se = np.sqrt((resid**2).sum()) / n
        assert abs(y[:, j].mean() - exact[lab]) < 4 * se, (lab, y[:, j].mean(), exact[lab], se)
        if abs(default[lab] - exact[lab]) > 8 * se:
            moved.append(lab)
    assert {"Support Devices", "No Finding", "Consolidation", "Pneumonia", "Atelectasis"} <= set(moved)


def test_site_b_population_labeller_and_metadata(site_b_sample: pd.DataFrame) -> None:
    df = site_b_sample
    critical = df["cause_critical"] == 1
    assert abs(critical.mean() - 0.65) < 0.02 and abs(df["cause_infection"].mean() - 0.30) < 0.02
    ap = df["ViewPosition"] == "AP"
    assert abs(ap[critical].mean() - 0.92) < 0.015 and abs(ap[~critical].mean() - 0.40) < 0.02
    assert df["Age"].mean() > sample_studies(5000, seed=31)["Age"].mean() + 5  # an older population
    true = df[[f"true_{p}" for p in PATHOLOGIES]].to_numpy() == 1
    obs = df[list(PATHOLOGIES)].to_numpy() == 1
    missed, invented = (~obs & true).sum() / true.sum(), (obs & ~true).sum() / (~true).sum()
    assert abs(missed - 0.10) < 0.006 and abs(invented - 0.01) < 0.001  # the site's labeller


def _brute_force_posterior(r: np.ndarray, site: SiteConfig, report_noise: bool) -> np.ndarray:
    """P(y_obs | r) under a site's label model, enumerating causes and all 13 true drawable labels."""
    n_c, n_y = 2 ** len(model.CAUSES), 2 ** len(DRAWABLE)
    c = (np.arange(n_c)[:, None] >> np.arange(len(model.CAUSES))) & 1
    y = ((np.arange(n_y)[:, None] >> np.arange(len(DRAWABLE))) & 1).astype(float)
    prior = np.ones(n_c)
    for k, cause in enumerate(model.CAUSES):
        prior *= np.where(c[:, k] == 1, site.cause_prior[cause], 1 - site.cause_prior[cause])
    joint = np.tile(prior[:, None], (1, n_y))
    for f in model.NOISY_OR_FINDINGS:
        keep = np.prod([(1 - w) ** c[:, model.CAUSES.index(k)] for k, w in model.WEIGHTS[f].items()], axis=0)
        p = 1 - (1 - model.LEAK[f]) * keep
        joint *= np.where(y[:, DRAWABLE.index(f)][None] == 1, p[:, None], 1 - p[:, None])
    lo = DRAWABLE.index("Lung Opacity")
    child = y[:, [DRAWABLE.index(ch) for ch in model.LUNG_OPACITY_CHILDREN]].max(axis=1)
    p_lo = np.where(child == 1, model.LO_GIVEN_CHILD, model.LO_LEAK)
    lik = np.where(y[:, lo] == 1, p_lo, 1 - p_lo)
    for d, lab in enumerate(DRAWABLE):
        vis = model.LO_LEAK_VISIBILITY * (1 - child) if lab == "Lung Opacity" else model.VISIBILITY[lab]
        lik = lik * (y[:, d] * vis if r[d] == 1 else 1 - y[:, d] * vis)
    w = (joint * lik[None]).sum(axis=0)
    w = w / w.sum()
    f10, f01 = (site.flip_pos_to_neg, site.flip_neg_to_pos) if report_noise else (0.0, 0.0)
    p_obs = y * (1 - f10) + (1 - y) * f01
    p_obs[:, DRAWABLE.index("Support Devices")] = y[:, DRAWABLE.index("Support Devices")]
    out = np.zeros(len(LABELS))
    for d, lab in enumerate(DRAWABLE):
        out[LABELS.index(lab)] = w @ p_obs[:, d]
    out[LABELS.index("No Finding")] = w @ np.prod(1 - p_obs[:, [DRAWABLE.index(p) for p in PATHOLOGIES]], axis=1)
    return out


PATTERNS = [(), ("Lung Opacity",), ("Pneumonia",), ("Support Devices", "Atelectasis", "Pneumothorax"),
            ("Fracture", "Enlarged Cardiomediastinum", "Lung Opacity"), ("Pleural Other", "Lung Lesion", "Edema")]


@pytest.mark.parametrize("report_noise", [True, False])
def test_site_b_posterior_equals_brute_force(report_noise: bool) -> None:
    r = np.zeros((len(PATTERNS), len(DRAWABLE)))
    for i, p in enumerate(PATTERNS):
        r[i, [DRAWABLE.index(lab) for lab in p]] = 1
    config = PhantomConfig(report_noise=report_noise, site=SITE_B)
    expected = np.stack([_brute_force_posterior(row, SITE_B, report_noise) for row in r])
    np.testing.assert_allclose(posterior(r, config), expected, rtol=1e-9, atol=1e-12)
    assert np.abs(posterior(r, PhantomConfig(report_noise=report_noise)) - expected).max() > 0.02  # priors moved


def test_site_b_posterior_matches_monte_carlo() -> None:
    df = sample_studies(60_000, seed=32, config=B)
    first = df[df["Study"] == 1]  # independent draws from the per-study model
    groups = first.groupby([f"drawn_{lab}" for lab in DRAWABLE])
    for key in groups.size().sort_values(ascending=False).index[:8]:
        rows = groups.get_group(key)
        n, p = len(rows), posterior(np.array(key)[None], B)[0]
        freq = rows[list(LABELS)].mean().to_numpy()
        assert (np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 2 / n).all(), (key, n, freq - p)


def test_oracle_follows_the_label_model_not_the_scanner() -> None:
    table = _pattern_table(B.label_model)
    assert table.spread.max() < 1e-13 and table.gap.min() > 1e-9  # exact ties, well separated
    raw, _ = _posterior_patterns(np.asarray(table.patterns), _states(B))
    np.testing.assert_allclose(table.post, raw, rtol=1e-12, atol=0)
    r, post = table.patterns, table.post
    for d, lab in enumerate(DRAWABLE):  # a drawn finding is present: only the labeller's misses remain
        expected = 1.0 if lab == "Support Devices" else 1 - SITE_B.flip_pos_to_neg
        assert np.unique(post[r[:, d] == 1, LABELS.index(lab)]) == pytest.approx([expected], abs=1e-12), lab
    # The scanner, AP share and ages are not in the label model: the same cached table.
    other = PhantomConfig(site=replace(SITE_B, name="x", scanner=DEFAULT_SCANNER, ap_prob_other=0.1, age_mean=40))
    assert other.label_model == B.label_model and _pattern_table(other.label_model) is table
    assert _pattern_table(PhantomConfig().label_model) is _pattern_table(True) is not table
    _, macro_b = population_auc(config=B)
    _, macro_a = population_auc()
    assert macro_b < macro_a - 0.01  # more label noise: a lower ceiling
    priors_only = PhantomConfig(site=SiteConfig(cause_prior=SITE_B.cause_prior))
    assert abs(prevalences(priors_only)["Support Devices"] - prevalences()["Support Devices"]) > 0.1


def test_images_of_site_b_differ_measurably_and_keep_the_findings_visible() -> None:
    studies = sample_studies(24, seed=4)
    size, scanners = 64, {"default": DEFAULT_SCANNER, "site_b": SITE_B.scanner}
    stats: dict[str, dict[str, list[float]]] = {k: {"mean": [], "noise": [], "body": []} for k in scanners}
    snr: dict[str, dict[str, list[float]]] = {k: {f: [] for f in FINDINGS} for k in scanners}
    for i, row in enumerate(studies.itertuples()):
        hab = {k: float(getattr(row, f"hab_{k}")) for k in ("width", "height", "rotation", "brightness")}
        args = (size, {}, hab, row.ViewPosition == "AP")
        for name, sc in scanners.items():
            quiet = replace(sc, noise_sd=(0.0, 0.0))
            img = render(*args, np.random.default_rng(row.image_seed), sc).astype(float)
            clean = render(*args, np.random.default_rng(row.image_seed), quiet).astype(float)
            low = np.percentile(clean, 1)
            stats[name]["mean"].append(img.mean())
            stats[name]["noise"].append((img - clean).std())
            stats[name]["body"].append((clean > low + 0.2 * (np.median(clean) - low)).mean())
            for f in FINDINGS if i < 6 else ():  # a faint finding (severity 0.3) against the pixel noise
                diff = render(size, {f: 0.3}, *args[2:], np.random.default_rng(row.image_seed), quiet) - clean
                snr[name][f].append(np.sqrt((diff**2).sum()) / (np.mean(sc.noise_sd) * 255))
    a, b = ({k: np.array(v) for k, v in stats[n].items()} for n in scanners)
    assert (b["mean"] - a["mean"]).mean() < -15  # darker (grey levels of 255)
    assert (b["noise"] > 1.3 * a["noise"]).all()  # noisier
    assert (b["body"] - a["body"]).mean() > 0.03  # tighter field: less background around the body
    for f in FINDINGS:  # still learnable: a faint finding stays well above the noise, weaker than at home
        ratio = np.median(snr["site_b"][f]) / np.median(snr["default"][f])
        assert np.median(snr["site_b"][f]) > 3 and 0.3 < ratio < 0.9, (f, snr["site_b"][f], ratio)


def test_cli_synth_and_oracle_use_the_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "b"
    args = ["synth", "--patients", "150", "--size", "16", "--workers", "1", "--quiet"]
    assert main([*args, "--site", "site_b", "--out", str(root)]) == 0
    assert phantom_config(root) == B
    labels, truth = phantom_tables(root)
    scores = oracle_scores(truth)[list(LABELS)].to_numpy()
    assert np.array_equal(scores, posterior(truth, B))
    assert not np.allclose(scores, posterior(truth, PhantomConfig()))
    assert main(["oracle", str(root), "--out", str(tmp_path / "oracle.csv")]) == 0
    table = pd.read_csv(tmp_path / "oracle.csv", index_col=[0, 1])
    per_label, macro = oracle_auc(truth, labels, config=B)
    assert table.loc[("all", "oracle"), "macro"] == pytest.approx(macro, abs=1e-12)
    assert table.loc[("all", "oracle"), list(per_label.dropna().index)].to_numpy() == pytest.approx(
        per_label.dropna().to_numpy(), abs=1e-12)
    custom = tmp_path / "c"
    spec = "{preset: site_b, flip_pos_to_neg: 0.2, scanner: {crop: 0.95}}"
    assert main([*args, "--site", spec, "--out", str(custom)]) == 0
    site = phantom_config(custom).site
    assert (site.name, site.flip_pos_to_neg, site.scanner.crop, site.cause_prior) == (
        "custom", 0.2, 0.95, SITE_B.cause_prior)
    capsys.readouterr()
    assert main([*args, "--site", "site_c", "--out", str(tmp_path / "x")]) == 2
    assert "--site: unknown site 'site_c'" in capsys.readouterr().err
    assert main([*args, "--site", "{scanner: {noise_sd: [0.05, 0.01]}}", "--out", str(tmp_path / "x")]) == 2
    assert "--site.scanner.noise_sd: must satisfy" in capsys.readouterr().err


@pytest.mark.parametrize(("site", "message"), [
    ("site_c", r"phantom\.site: unknown site 'site_c'; known: \['default', 'site_b'\]"),
    ({"preset": "c"}, r"phantom\.site\.preset: unknown site 'c'"),
    ({"flip_pos_to_neg": 0.7}, r"phantom\.site\.flip_pos_to_neg: must be a number in \[0, 0\.5\), got 0\.7"),
    ({"flip_neg_to_pos": "x"}, r"phantom\.site\.flip_neg_to_pos: must be a number"),
    ({"cause_prior": {"critical": 1.0}}, r"phantom\.site\.cause_prior\.critical: must be a number in \(0, 1\)"),
    ({"cause_prior": {"flu": 0.1}}, r"phantom\.site\.cause_prior: unknown cause\(s\) \['flu'\]"),
    ({"ap_prob_other": -0.1}, r"phantom\.site\.ap_prob_other: must be a number in \[0, 1\]"),
    ({"age_mean": 5}, r"phantom\.site\.age_mean: must be a number in \[18, 90\]"),
    ({"noise": 0.1}, r"phantom\.site: unknown key\(s\) \['noise'\]"),
    ({"scanner": {"crop": 0.5}}, r"phantom\.site\.scanner\.crop: must be a number in \[0\.85, 1\]"),
    ({"scanner": {"gamma": [1.5, 1.1]}}, r"phantom\.site\.scanner\.gamma: must satisfy"),
    ({"scanner": {"blur": 0.5}}, r"phantom\.site\.scanner\.blur: must be a range \[low, high\]"),
    ({"scanner": {"exposure": 0}}, r"phantom\.site\.scanner\.exposure: must be a number in \(0, 2\]"),
    ({"scanner": {"iso": 100}}, r"phantom\.site\.scanner: unknown key\(s\) \['iso'\]"),
    (3, r"phantom\.site: must be a site name"),
])
def test_bad_site_values_name_the_key(tmp_path: Path, site: object, message: str) -> None:
    cfg = StudyConfig(name="s", data=str(tmp_path / "p"), runs=str(tmp_path / "r"),
                      phantom={"patients": 10, "size": 16, "seed": 0, "site": site})
    with pytest.raises(ConfigError, match=message):
        cfg.validate()
    with pytest.raises(ValueError, match=message.replace(r"phantom\.", "", 1)):
        get_site(site)


def test_a_study_generates_its_sites_phantom_and_regenerates_when_the_site_changes(tmp_path: Path) -> None:
    def study(site: object) -> StudyConfig:
        phantom = {"patients": 30, "size": 16, "seed": 1, "site": site}
        return StudyConfig(name="site", data=str(tmp_path / "phantom"), runs=str(tmp_path / "runs"),
                           phantom=phantom).validate()

    marker = tmp_path / "phantom" / MARKER
    prepare(study("site_b"), progress=False)
    assert json.loads(marker.read_text())["site"] == SITE_B.record()
    stamp = marker.stat().st_mtime_ns
    prepare(study({"preset": "site_b"}), progress=False)  # the same site: nothing regenerated
    assert marker.stat().st_mtime_ns == stamp
    prepare(study({"preset": "site_b", "flip_pos_to_neg": 0.2}), progress=False)
    assert phantom_config(tmp_path / "phantom").site.flip_pos_to_neg == 0.2
    prepare(study("default"), progress=False)
    assert json.loads(marker.read_text())["site"] == SiteConfig().record()
    assert phantom_config(tmp_path / "phantom") == PhantomConfig()


def test_phantom_config_of_folders_without_a_site(tmp_path: Path) -> None:
    assert phantom_config(tmp_path) == PhantomConfig()  # no phantom.json: the default
    (tmp_path / MARKER).write_text(json.dumps({"generator": "cxrkit.phantom", "config": {"report_noise": False}}))
    assert phantom_config(tmp_path) == PhantomConfig(report_noise=False)  # written before sites existed
    (tmp_path / MARKER).write_text(json.dumps({"site": {"flip_pos_to_neg": 0.9}}))
    with pytest.raises(ValueError, match=r"phantom\.json: not a valid phantom marker \(site\.flip_pos_to_neg"):
        phantom_config(tmp_path)
