"""A study with training-seed replicates (``seeds:``): its plan, run folders, parameters, and the
seed-covering comparison of 05 on hand-made prediction files (the data of test_study_analyses)."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from test_study_analyses import (
    FOLD_IMAGES,
    LABELS,
    TEST_IMAGES,
    _scores,
    _write_study,
    _write_table,
)

from cxrkit import study as S
from cxrkit.utils.params import ConfigError

SEEDS = [0, 1]
# Test-split scores of every fold, per (variant, seed): the kinds of labels A-D (P perfect: AUC 1,
# T ties: AUC 0.5; both unchanged by any resample that keeps both classes).
# seed 0: none T, sparse P -> difference +0.5 on every label; seed 1: both T -> 0.
KINDS = {("none", 0): (0.5,) * 4, ("sparse", 0): ("P",) * 4, ("none", 1): (0.5,) * 4, ("sparse", 1): (0.5,) * 4}


@pytest.fixture(scope="module")
def seeds_study(tmp_path_factory):
    from cxrkit.data.datasets import create_dataset, fingerprint
    from cxrkit.data.splits import save_splits
    from cxrkit.evaluation.predictions import write_predictions
    from cxrkit.utils.files import write_json

    tmp = tmp_path_factory.mktemp("seeds_study")
    _write_table(tmp / "data")
    path = _write_study(tmp, name="seeds", variants=["none", "sparse"], seeds=SEEDS, train={}, bootstrap=200)
    cfg = S.load_study(path).validate()
    table = create_dataset("gxs", root=cfg.data, check_images=False).table
    fold_of = {im: k for k, images in FOLD_IMAGES.items() for im in images}
    splits = pd.DataFrame({"image": table["image"], "patient_id": table["patient_id"],
                           "split": ["train" if im in fold_of else "test" for im in table["image"]],
                           "fold": [fold_of.get(im, -1) for im in table["image"]]})
    save_splits(splits, cfg.splits_path, {"seed": 0, "n_folds": 2, "test_size": 0.25, "group": "patient",
                                          "fingerprint": fingerprint(table), "dataset": "gxs", "data": cfg.data})
    splits_fp = hashlib.sha256(cfg.splits_path.read_bytes()).hexdigest()[:16]
    for (variant, seed), kinds in KINDS.items():
        for k in range(cfg.n_folds):
            out = cfg.train_dir(k, variant, seed)
            out.mkdir(parents=True)
            meta = {"data_fingerprint": fingerprint(table), "splits_fingerprint": splits_fp, "fold": k,
                    "variant": variant, "backbone": "test_resnet", "seed": seed, "best_epoch": 1}
            for split, images in (("val", FOLD_IMAGES[k]), ("test", TEST_IMAGES)):
                write_predictions(out / f"pred_{split}.csv", list(images), list(LABELS), _scores(images, kinds),
                                  {**meta, "split": split, "tta": True})
            write_json(out / "metrics.json", {"val_macro_auc": 0.5, "best_epoch": 1, "epochs_run": 1})
    return cfg


def test_every_seed_has_its_runs_steps_and_parameters(seeds_study, tmp_path):
    cfg = seeds_study
    assert cfg.seed_list == SEEDS
    assert cfg.train_dir(1, "sparse", 1) == cfg.run_dir / "sparse" / "seed1" / "fold1"
    assert cfg.train_dir(1, "sparse") == cfg.run_dir / "sparse" / "seed0" / "fold1"  # None: the first seed
    assert cfg.train_config(0, "none", 1).seed == 1 and cfg.train_config(0, "none").seed == 0
    with pytest.raises(ConfigError, match="seed 5 is not one of study 'seeds'"):
        cfg.train_dir(0, "none", 5)
    train_steps = [s.name for s in S.plan(cfg, "p.yaml") if s.notebook == "03_train"]
    assert train_steps == [f"03_train_fold{k}_refiner{v}_seed{s}" for s in SEEDS for v in ("none", "sparse")
                           for k in (0, 1)]
    assert S.missing_runs(cfg, seeds=cfg.seed_list) == []
    # a study without seeds keeps its folders and step names
    plain = S.load_study(_write_study(tmp_path, name="plain", variants=["none"])).validate()
    assert plain.seed_list == [0] and plain.train_dir(0, "none") == plain.run_dir / "none" / "fold0"
    assert [s.name for s in S.plan(plain, "p.yaml") if s.notebook == "03_train"] == [
        "03_train_fold0_refinernone", "03_train_fold1_refinernone"]


@pytest.mark.parametrize("seeds, train, match", [
    ([], {}, "non-empty list of integers"), ([0, -1], {}, "non-empty list of integers"),
    ([1, 1], {}, "each seed once"), ([0, 1], {"seed": 3}, "leave train.seed"), ("0", {}, "'seeds' must be list")])
def test_bad_seeds_are_refused(tmp_path, seeds, train, match):
    with pytest.raises(ConfigError, match=match):
        S.load_study(_write_study(tmp_path, seeds=seeds, train=train)).validate()


def test_seed_replicates_cover_the_training_seed(seeds_study):
    """By hand: per-seed differences +0.5 (seed 0) and 0 (seed 1), the same on every resample. The
    mean over seeds is 0.25; resampling 2 seeds gives means 0, 0.25, 0.5 with probabilities 1/4,
    1/2, 1/4, so the seed-covering 95% interval is [0, 0.5], while seed 0's test-only interval
    collapses onto +0.5."""
    result = S.seed_replicates(seeds_study)
    row = result["paired"].loc["sparse - none"]
    assert row["diff (mean over seeds)"] == pytest.approx(0.25, abs=1e-12)
    assert (row["diff seed 0"], row["diff seed 1"]) == (pytest.approx(0.5), pytest.approx(0.0))
    assert row["low (seeds and test)"] == pytest.approx(0.0) and row["high (seeds and test)"] == pytest.approx(0.5)
    assert row["low seed 0 (test only)"] == pytest.approx(0.5) and row["high seed 0 (test only)"] == pytest.approx(0.5)
    assert "training seed" in row["CI covers"] and row["seeds"] == 2
    per_seed = result["per_seed"]
    # 10 inactive labels are never scorable: macro over A-D; none: 0.5; sparse: 1 (seed 0), 0.5 (seed 1)
    assert per_seed.loc["seed 0", "sparse"] == pytest.approx(1.0) and per_seed.loc["seed 1", "sparse"] == pytest.approx(0.5)
    assert per_seed.loc["mean", "none"] == pytest.approx(0.5) and per_seed.loc["mean", "sparse"] == pytest.approx(0.75)
