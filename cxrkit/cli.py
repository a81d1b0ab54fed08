"""``cxrkit`` command line: synth, oracle, folds, train, predict, infer, evaluate, study, screenshot, bench, weights.

Options mirror the parameter names used by the parameter files and notebooks (``image_size``
is ``--image-size``). Relative paths are resolved from the project root.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from cxrkit.tools.weights import add_parser as _add_weights
from cxrkit.training.config import TrainConfig
from cxrkit.utils.files import check_writable, write_json
from cxrkit.utils.params import ConfigError, from_dict, load_yaml
from cxrkit.utils.paths import resolve
from cxrkit.utils.provenance import environment


def _add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--option`` per dataclass field; lists and dicts are given as YAML/JSON strings."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        doc = f"(default: {default!r})"
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            parser.add_argument(flag, dest=f.name, default=None, type=yaml.safe_load, help=doc)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--dataset`` and ``--dataset-options`` (a JSON object of loader options)."""
    parser.add_argument("--data", default="data/phantom", help="dataset folder")
    parser.add_argument("--dataset", default="gxs", help="loader: gxs | chexpert | nih | mimic | padchest | vindr | merged")
    parser.add_argument("--dataset-options", type=json.loads, default={},
                        help='JSON object of loader options, e.g. \'{"views": ["PA"]}\' or, for merged, '
                             '\'{"sources": [{"dataset": "nih", "data": "nih"}, {"dataset": "padchest", "data": "pc"}]}\'')


def _config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Parameters: dataclass defaults <- ``--config`` YAML file <- explicit options."""
    values: dict[str, Any] = load_yaml(args.config) if args.config else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return from_dict(cls, values, source=str(args.config or "command line"))


def cmd_synth(args: argparse.Namespace) -> int:
    """``cxrkit synth``: write a phantom dataset."""
    from cxrkit.phantom.generate import generate
    from cxrkit.phantom.model import PhantomConfig
    from cxrkit.phantom.site import get_site

    try:  # a preset name, or a YAML/JSON mapping of site fields
        site = get_site(yaml.safe_load(args.site), where="--site")
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(str(exc)) from None
    check_writable(resolve(args.out), "the phantom", "choose a writable folder with --out")
    cfg = PhantomConfig(report_noise=not args.no_report_noise, uncertain_rate=args.uncertain_rate, site=site)
    info = generate(resolve(args.out), n_patients=args.patients, size=args.size, seed=args.seed, config=cfg,
                    workers=args.workers, progress=not args.quiet, overwrite=args.overwrite, image_format=args.format)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_oracle(args: argparse.Namespace) -> int:
    """``cxrkit oracle``: exact oracle AUCs of a phantom, on all images or per split."""
    import pandas as pd

    from cxrkit.phantom.files import phantom_tables, split_groups
    from cxrkit.phantom.oracle import oracle_auc

    root = resolve(args.data)
    if args.out:
        check_writable(resolve(args.out).parent, "the oracle table", "choose a writable --out")
    labels_df, truth = phantom_tables(root)
    groups: dict[str, list[str]] = {"all": labels_df["Image_name"].tolist()}
    if args.split:  # the splits must hold the phantom's images and patients
        groups = {k if k == "test" else f"{k} (val)": v.tolist()
                  for k, v in split_groups(resolve(args.split), labels_df).items()}
    rows = {}
    for name, images in groups.items():
        sel_l = labels_df[labels_df["Image_name"].isin(images)]
        sel_t = truth[truth["Image_name"].isin(images)]
        joint, joint_macro = oracle_auc(sel_t, sel_l)
        marg, marg_macro = oracle_auc(sel_t, sel_l, marginal=True)
        rows[(name, "oracle")] = {**joint.to_dict(), "macro": joint_macro}
        rows[(name, "marginal oracle")] = {**marg.to_dict(), "macro": marg_macro}
    table = pd.DataFrame(rows).T
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 100,
                           "display.float_format", "{:.4f}".format):
        print(table.T)  # one row per label and the macro AUC, one column per split and oracle
    if args.out:
        out = resolve(args.out)
        table.to_csv(out)
        write_json(out.with_suffix(".json"), {"data": str(root), "split": str(resolve(args.split)) if args.split else None,
                                              **environment()})
    return 0


def cmd_folds(args: argparse.Namespace) -> int:
    """``cxrkit folds``: the test split and folds of a dataset -> ``folds.csv``."""
    from cxrkit.data.datasets import (
        check_dataset_options,
        check_test_split,
        create_dataset,
        fingerprint,
    )
    from cxrkit.data.splits import balance_table, check_leakage, make_splits, save_splits

    check_dataset_options(args.dataset, args.dataset_options)
    check_test_split(args.dataset, args.dataset_options, args.test, where="--test")
    if args.test == "official" and args.test_size is not None:
        raise ConfigError("--test-size: not used with --test official (the official test set is held out)")
    out = resolve(args.out or Path(args.data) / "folds.csv")
    out = out if out.suffix == ".csv" else out / "folds.csv"
    check_writable(out.parent, "the folds", "write them elsewhere with --out FOLDER/folds.csv "
                                               "(then train with --splits FOLDER/folds.csv)")
    ds = create_dataset(args.dataset, root=resolve(args.data), check_images=False, **args.dataset_options)
    test_size = 0.2 if args.test_size is None else args.test_size
    splits = make_splits(ds.table, ds.labels, n_folds=args.n_folds, test_size=test_size, seed=args.seed,
                         group=args.group, test_split=args.test)
    if args.group == "patient":
        check_leakage(splits)
    save_splits(splits, out, {"seed": args.seed, "n_folds": args.n_folds, "group": args.group,
                              "fingerprint": fingerprint(ds.table), "dataset": args.dataset,
                              "data": str(resolve(args.data)), "provenance": environment(),
                              **({"test_size": test_size} if args.test == "stratified" else {})})
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 40):
        print(balance_table(ds.table, splits, ds.labels))
    if ds.quality:
        print(f"data quality: {json.dumps(ds.quality, default=str)}")
    print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``cxrkit train``: one fold of one variant."""
    from cxrkit.training.loop import train

    cfg = _config_from_args(TrainConfig, args)
    summary = train(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "val_per_label_auc"}, indent=2, default=str))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``cxrkit predict``: the fold ensemble of several runs' predictions."""
    from cxrkit.evaluation.ensemble import ensemble
    from cxrkit.evaluation.predictions import write_predictions

    name = f"pred_{args.split}{'' if args.tta else '_notta'}.csv"
    files = [resolve(r) / name for r in args.runs]
    out = resolve(args.out)
    check_writable(out.parent, "the ensemble", "choose a writable --out")
    df, meta = ensemble(files)
    write_predictions(out, df["image"], [c for c in df.columns if c != "image"], df.drop(columns="image").to_numpy(),
                      {**{k: v for k, v in meta.items() if k not in ("labels", "n")}, "provenance": environment()})
    print(f"wrote {out} (mean of {len(files)} runs)")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """``cxrkit infer``: predict new images (a folder, a glob, a dataset) with trained runs."""
    from cxrkit.study import infer, load_study, variant_runs

    if (args.study is None) != (args.variant is None):
        raise ConfigError("--study and --variant go together (the variant's folds are the runs)")
    runs = [*args.runs, *(variant_runs(load_study(args.study), args.variant) if args.study else [])]
    table, meta = infer(runs, images=args.images, dataset=args.dataset, data=args.data,
                        dataset_options=args.dataset_options, out=args.out, device=args.device,
                        batch_size=args.batch_size, workers=args.workers, tta=args.tta, amp=args.amp,
                        on_bad_image=args.on_bad_image, progress=not args.quiet)
    print(f"wrote {resolve(args.out)}: {len(table)} images ({meta['excluded']} excluded), mean of {len(runs)} "
          f"run(s), flip TTA {'on' if args.tta else 'off'}, labels {meta['label_alignment'] or len(table.columns) - 1}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``cxrkit evaluate``: metrics of one prediction file, or the paired difference of two."""
    from cxrkit.evaluation.evaluate import evaluate_files

    if args.out:
        check_writable(resolve(args.out).parent, "the metrics table", "choose a writable --out")
    report = evaluate_files([resolve(p) for p in args.predictions], data=resolve(args.data), dataset=args.dataset,
                            dataset_options=args.dataset_options, threshold=args.threshold, n_boot=args.bootstrap,
                            seed=args.seed)
    print(report["text"])
    if args.out:
        out = resolve(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report["table"].to_csv(out)
        write_json(out.with_suffix(".json"), {"predictions": [str(resolve(p)) for p in args.predictions],
                                              "data": str(resolve(args.data)), "threshold": args.threshold,
                                              "bootstrap": args.bootstrap, "seed": args.seed,
                                              "summary": report["lines"], "labels": report["labels"],
                                              "per_label_auc": report["per_label_json"],
                                              **environment()})
        print(f"wrote {out}")
    return 0


def _jobs(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def cmd_study(args: argparse.Namespace) -> int:
    """``cxrkit study``: run a study's notebooks and write its report."""
    from cxrkit.study import run_study

    result = run_study(args.file, force=args.force, only=args.only, jobs=args.jobs, executor=args.executor)
    print(f"report: {result['index']}")
    return 0


def cmd_screenshot(args: argparse.Namespace) -> int:
    """``cxrkit screenshot``: a headless screenshot of a report page."""
    from cxrkit.tools.screenshot import screenshot

    stats = screenshot(resolve(args.html), resolve(args.out))
    print(f"wrote {resolve(args.out)}: {stats}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``cxrkit bench``: throughput benchmarks; status 1 when a speed goal is missed."""
    from cxrkit.tools.bench import run_bench

    result = run_bench(data=resolve(args.data), out=resolve(args.out), quick=args.quick)
    missed = [g["goal"] for g in result.attrs["goals"] if not g["met"]]
    if missed and not args.quick:
        print(f"cxrkit bench: speed goal(s) missed: {missed}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cxrkit`` command."""
    p = argparse.ArgumentParser(prog="cxrkit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_oracle, _add_folds, _add_train, _add_predict, _add_infer, _add_evaluate,
                _add_study, _add_screenshot, _add_bench, _add_weights):
        add(sub)
    return p


def _add_synth(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="write the embedded phantom dataset (train.csv, images/, truth.csv)")
    s.add_argument("--out", default="data/phantom")
    s.add_argument("--patients", type=int, default=1700)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=("png", "png16", "dicom"), default="png",
                   help="image files: 8-bit PNG, 16-bit PNG or DICOM (.dcm; MONOCHROME1/2, 12-bit, rescale and "
                        "VOI window); every format decodes to the same pixels")
    s.add_argument("--site", default="default",
                   help="the hospital: a preset (default | site_b: another population, labeller and scanner) or a "
                        "YAML mapping of site fields, e.g. '{preset: site_b, flip_pos_to_neg: 0.2, scanner: "
                        "{crop: 0.95}}'; the oracle follows the site's label model")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--uncertain-rate", type=float, default=0.0)
    s.add_argument("--no-report-noise", action="store_true")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_synth)


def _add_oracle(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("oracle", help="exact oracle AUC (joint and marginal) of a phantom dataset")
    s.add_argument("data", nargs="?", default="data/phantom")
    s.add_argument("--split", help="folds.csv: report the test split and every validation fold")
    s.add_argument("--out", help="also write the table as CSV")
    s.set_defaults(func=cmd_oracle)


def _add_folds(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("folds", help="patient-grouped MIS test split and K folds -> folds.csv")
    _add_data_options(s)
    s.add_argument("--n-folds", type=int, default=3)
    s.add_argument("--test-size", type=float, default=None, help="share of the images held out (default 0.2)")
    s.add_argument("--test", choices=("stratified", "official"), default="stratified",
                   help="test split: stratified (--test-size of the images, patient-grouped) or official (the "
                        "dataset's official test images: NIH test_list.txt, MIMIC split file, CheXpert valid.csv, "
                        "VinDr test set; folds from the rest)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--group", choices=("patient", "image"), default="patient")
    s.add_argument("--out", help="default: DATA/folds.csv (a read-only DATA needs another: FOLDER/folds.csv)")
    s.set_defaults(func=cmd_folds)


def _add_train(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("train", help="train one fold of one refiner variant")
    s.add_argument("--config", help="YAML parameter file (options given here override it)")
    _add_config_options(s, TrainConfig)
    s.set_defaults(func=cmd_train)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("predict", help="fold ensemble: average the saved predictions of several runs")
    s.add_argument("runs", nargs="+", help="run folders (one per fold)")
    s.add_argument("--split", choices=("val", "test"), default="test")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_predict)


def _add_infer(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("infer", help="predict new images with trained runs (fold ensemble, flip TTA)")
    s.add_argument("runs", nargs="*", help="run folders (or --study FILE --variant NAME: its folds)")
    s.add_argument("--study", help="study parameter file")
    s.add_argument("--variant", help="the study's variant whose folds predict")
    s.add_argument("--images", help="a folder (every file is an image), a glob ('new/**/*.dcm') or a file")
    _add_data_options(s)  # instead of --images: a dataset read by its loader
    s.set_defaults(data=None, dataset=None)
    s.add_argument("--out", required=True, help="prediction CSV (a .json sidecar with the provenance goes beside it)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True, help="flip TTA")
    s.add_argument("--amp", choices=("auto", "fp16", "bf16", "off"), default="auto")
    s.add_argument("--on-bad-image", choices=("error", "exclude"), default="error",
                   help="exclude: predict the usable images, list the others in <out>_excluded.csv")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_infer)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("evaluate", help="metrics of one prediction file, or the paired difference of two")
    s.add_argument("predictions", nargs="+", help="one file, or two (baseline first) for a paired comparison")
    _add_data_options(s)
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--bootstrap", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="write the table as CSV")
    s.set_defaults(func=cmd_evaluate)


def _add_study(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("study", help="run every notebook of the study with papermill and write the HTML report")
    s.add_argument("-f", "--file", default="params/default.yaml", help="study parameter file")
    s.add_argument("--force", action="store_true", help="re-run steps whose inputs did not change")
    s.add_argument("--only", nargs="+", help="run only steps whose name starts with one of these")
    s.add_argument("--jobs", type=_jobs, default=None,
                   help="training notebooks run in parallel (one GPU each when GPUs are present); "
                        "'auto': one per GPU, else 2 on a CPU with >= 2 cores (default 1); with a cluster "
                        "executor, the most jobs at a time (default: all)")
    s.add_argument("--executor", choices=("local", "slurm", "local-submitit"), default="local",
                   help="where training notebooks run: here (local), one SLURM job each through submitit as the "
                        "study file's 'cluster:' block asks (slurm; needs cxrkit[slurm]), or the same jobs as "
                        "local processes (local-submitit)")
    s.set_defaults(func=cmd_study)


def _add_screenshot(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("screenshot", help="headless Chromium screenshot of a report page (checks it is not blank)")
    s.add_argument("html", nargs="?", default="reports/default/index.html")
    s.add_argument("--out", default="runs/bench/report.png")
    s.set_defaults(func=cmd_screenshot)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("bench", help="throughput of the input pipeline, training and the refiner")
    s.add_argument("--data", default="data/bench")
    s.add_argument("--out", default="runs/bench")
    s.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    s.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors in the input are printed as one line, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, PermissionError) as exc:  # NotWritableError is a PermissionError
        print(f"cxrkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # DataError, LeakageError, StudyError, TrainingError, ...
        print(f"cxrkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
