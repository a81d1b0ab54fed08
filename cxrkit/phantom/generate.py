"""Write a phantom CXR dataset to disk in the Grand X-Ray Slam Division B layout.

``out/train.csv`` (public table), ``out/truth.csv`` (ground-truth sidecar), ``out/images/``
(8-bit grayscale PNGs, or in another format: 16-bit PNGs or DICOM, :mod:`cxrkit.phantom.formats`,
which decode to exactly the same pixels), ``out/regions.csv`` (where each drawn finding is on its
image: :mod:`cxrkit.phantom.regions`) and ``out/phantom.json`` (generator parameters, the site and
counts). The site (``config.site``, :mod:`cxrkit.phantom.site`) sets the population, the labeller
and the scanner; the default site is the design page's phantom. Every image is rendered
from its own ``image_seed``, so the output does not depend on the worker count; the same
arguments give byte-identical files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from cxrkit import __version__
from cxrkit.data.labels import LABELS
from cxrkit.phantom import model
from cxrkit.phantom.formats import FORMATS
from cxrkit.phantom.model import DEFAULT_CONFIG, DEFAULT_SITE, DRAWABLE, HABITUS_KEYS, PhantomConfig
from cxrkit.phantom.regions import REGION_COLUMNS, REGIONS, finding_regions
from cxrkit.phantom.sampling import sample_studies, split_table
from cxrkit.phantom.scanner import DEFAULT_SCANNER, Scanner
from cxrkit.utils.files import write_json
from cxrkit.utils.provenance import environment

#: Name of the parameter file that marks a directory as phantom output.
MARKER = "phantom.json"
#: Value of the ``generator`` field of :data:`MARKER`.
GENERATOR = "cxrkit.phantom"
#: Float format of the CSVs (fixed, so same seed -> byte-identical files).
FLOAT_FORMAT = "%.6f"
#: The modules whose code determines a phantom's files (label model, renderer, writer).
SOURCES = ("model.py", "sampling.py", "render.py", "scene.py", "anatomy.py", "findings.py", "generate.py",
           "formats.py", "scanner.py", "site.py", "regions.py")

#: One rendering job: image path, findings, habitus, AP view, image seed, side, format, DICOM header,
#: scanner.
_Task = tuple[str, dict[str, float], dict[str, float], bool, int, int, str, dict[str, Any], Scanner]


def _model_parameters(config: PhantomConfig) -> dict[str, Any]:
    """The parameters of the label model, the site's where it sets them, as written to :data:`MARKER`."""
    site = config.site
    return {
        "causes": list(model.CAUSES),
        "cause_prior": dict(site.cause_prior),
        "persistence": model.PERSISTENCE,
        "weights": model.WEIGHTS,
        "leak": model.LEAK,
        "visibility": model.VISIBILITY,
        "lung_opacity_children": list(model.LUNG_OPACITY_CHILDREN),
        "lo_given_child": model.LO_GIVEN_CHILD,
        "lo_leak": model.LO_LEAK,
        "lo_leak_visibility": model.LO_LEAK_VISIBILITY,
        "flip_pos_to_neg": site.flip_pos_to_neg,
        "flip_neg_to_pos": site.flip_neg_to_pos,
        "studies_per_patient": {str(k): v for k, v in model.STUDIES_PER_PATIENT.items()},
        "severity_range": list(model.SEVERITY_RANGE),
        "ap_prob_critical": site.ap_prob_critical,
        "ap_prob_other": site.ap_prob_other,
    }


def code_digest() -> str:
    """Short sha256 of the phantom's source (label model, renderer, writer): when it changes,
    earlier phantom output is stale even with the same parameters."""
    import hashlib

    h = hashlib.sha256()
    for name in SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def _parameters(n_patients: int, size: int, seed: int, config: PhantomConfig, image_format: str) -> dict[str, Any]:
    """Everything that determines the output (compared to decide whether a rerun is idempotent)."""
    if image_format not in FORMATS:
        raise ValueError(f"image_format: {image_format!r} is not one of {sorted(FORMATS)}")
    return {
        "generator": GENERATOR,
        "version": __version__,
        "code_digest": code_digest(),
        "n_patients": n_patients,
        "size": size,
        "seed": seed,
        "format": image_format,
        "config": {"report_noise": config.report_noise, "uncertain_rate": config.uncertain_rate},
        "site": config.site.record(),
        "model": _model_parameters(config),
    }


def _check_target(out: Path, params: dict[str, Any], overwrite: bool) -> None:
    """Refuse to write where it would clobber something else; clear a different phantom run.

    Raises:
        FileExistsError: ``out`` is a file, a non-empty directory that is not phantom output,
            or phantom output of other parameters while ``overwrite`` is False.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / MARKER
    try:
        previous = json.loads(marker.read_text())
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict) or previous.get("generator") != GENERATOR:
        raise FileExistsError(
            f"{out} is a non-empty directory that is not phantom output; choose another path"
        )
    if {k: previous.get(k) for k in params} == params:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} holds phantom output of other parameters; pass overwrite=True to replace it"
        )
    for suffix in sorted(set(FORMATS.values())):
        for image in (out / "images").glob(f"*{suffix}"):
            image.unlink()
    for name in ("train.csv", "truth.csv", REGIONS, MARKER):
        (out / name).unlink(missing_ok=True)


def _tasks(studies: pd.DataFrame, images: Path, size: int, fmt: str, dataset: str,
           scanner: Scanner) -> Iterator[_Task]:
    """Rendering jobs, one per row of :func:`~cxrkit.phantom.sampling.sample_studies` output
    (``dataset``: the phantom's identity, from which the DICOM UIDs are derived; ``scanner``: the
    site's)."""
    drawn = studies[[f"drawn_{lab}" for lab in DRAWABLE]].to_numpy().astype(bool)
    sev = studies[[f"sev_{lab}" for lab in DRAWABLE]].to_numpy(dtype=float)
    hab = studies[[f"hab_{k}" for k in HABITUS_KEYS]].to_numpy(dtype=float)
    ap = (studies["ViewPosition"] == "AP").to_numpy()
    seeds = studies["image_seed"].to_numpy()
    names = studies["Image_name"].to_numpy()
    meta = {c: studies[c].to_numpy() for c in ("Patient_ID", "Study", "Sex", "Age", "ViewPosition")}
    for i in range(len(studies)):
        findings = {DRAWABLE[d]: float(sev[i, d]) for d in np.flatnonzero(drawn[i])}
        habitus = dict(zip(HABITUS_KEYS, map(float, hab[i]), strict=True))
        header = {"dataset": dataset, "image": names[i], "patient_id": meta["Patient_ID"][i], "study": meta["Study"][i],
                  "sex": meta["Sex"][i], "age": int(meta["Age"][i]), "view": meta["ViewPosition"][i],
                  "seed": int(seeds[i])}
        yield str(images / names[i]), findings, habitus, bool(ap[i]), int(seeds[i]), size, fmt, header, scanner


def _render_one(task: _Task) -> list[tuple]:
    """Render one image with its own generator and write it in the phantom's format (the
    default scanner is the renderer's default: it is not passed); return its ``regions.csv`` rows."""
    from cxrkit.phantom.formats import write_image
    from cxrkit.phantom.render import render

    path, findings, habitus, view_ap, image_seed, size, fmt, header, scanner = task
    site_scanner = {} if scanner == DEFAULT_SCANNER else {"scanner": scanner}
    img = render(size, findings, habitus, view_ap, np.random.default_rng(image_seed), **site_scanner)
    if img.shape != (size, size) or img.dtype != np.uint8:
        raise ValueError(
            f"render returned {img.dtype} {img.shape}, expected uint8 ({size}, {size})"
        )
    write_image(path, img, fmt, header)
    return finding_regions(Path(path).name, size, findings, habitus, view_ap, image_seed, scanner)


def _render_all(studies: pd.DataFrame, images: Path, params: dict[str, Any], config: PhantomConfig,
                workers: int | None, progress: bool) -> pd.DataFrame:
    """Render every study's image into ``images`` with the site's scanner, in ``workers`` processes
    (default ``min(os.cpu_count(), 8)``; 1 renders in-process, in row order); return the regions
    of the drawn findings (:data:`~cxrkit.phantom.regions.REGION_COLUMNS`), in row order."""
    n_workers = max(1, min(os.cpu_count() or 1, 8) if workers is None else workers)
    dataset = f"{GENERATOR} seed={params['seed']} patients={params['n_patients']} size={params['size']}"
    if params["site"] != DEFAULT_SITE.record():  # another hospital: other DICOM UIDs
        dataset += f" site={json.dumps(params['site'], sort_keys=True)}"
    tasks = _tasks(studies, images, params["size"], params["format"], dataset, config.site.scanner)
    bar = tqdm(total=len(studies), desc="rendering phantom", unit="img", disable=not progress)
    rows: list[tuple] = []
    if n_workers == 1:
        for task in tasks:
            rows += _render_one(task)
            bar.update()
    else:
        chunk = max(1, min(64, len(studies) // (n_workers * 8)))
        with Pool(n_workers) as pool:
            for found in pool.imap_unordered(_render_one, tasks, chunksize=chunk):
                rows += found
                bar.update()
    bar.close()
    regions = pd.DataFrame(rows, columns=list(REGION_COLUMNS))
    order = pd.Series(np.arange(len(studies)), index=studies["Image_name"].to_numpy())
    return regions.iloc[np.argsort(order.loc[regions["Image_name"]].to_numpy(), kind="stable")]


def _write_tables(out: Path, train: pd.DataFrame, truth: pd.DataFrame, regions: pd.DataFrame) -> None:
    """Write ``train.csv``, ``truth.csv`` and ``regions.csv`` (fixed float format: deterministic bytes)."""
    train.to_csv(out / "train.csv", index=False, lineterminator="\n")
    truth.to_csv(out / "truth.csv", index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    regions.to_csv(out / REGIONS, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def _write_marker(out: Path, info: dict[str, Any]) -> None:
    """Write :data:`MARKER` (deterministic content: no timestamps)."""
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def generate(
    out: str | Path,
    n_patients: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = DEFAULT_CONFIG,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    image_format: str = "png",
) -> dict[str, Any]:
    """Generate a phantom CXR dataset.

    Args:
        out: output directory (created if missing).
        n_patients: number of patients (about 1.8 images each).
        size: side of the square images in pixels.
        seed: seed of the label model; images use the per-row ``image_seed`` it draws.
        config: label-model options and the site (``config.site``: population, labeller and
            scanner; :mod:`cxrkit.phantom.site`), recorded in ``phantom.json`` under ``site``.
        workers: rendering processes (default ``min(os.cpu_count(), 8)``; 1 renders in-process).
        progress: show a tqdm progress bar.
        overwrite: replace phantom output of other parameters in ``out``.
        image_format: ``png`` (8-bit), ``png16`` (16-bit PNG) or ``dicom`` (``.dcm`` files, a mix
            of MONOCHROME1/2 and transfer syntaxes; :mod:`cxrkit.phantom.formats`). Every format
            decodes with the default image policy to the same pixels and has the same labels and
            truth; only the DICOM image names differ (``.dcm``).

    Returns:
        The content of ``phantom.json`` plus ``out`` (str) and ``seconds`` (wall time).

    Raises:
        ValueError: an unknown image format.
        FileExistsError: see :func:`_check_target` (rerunning with the same parameters is fine).
    """
    start = time.perf_counter()
    out = Path(out)
    params = _parameters(n_patients, size, seed, config, image_format)
    _check_target(out, params, overwrite)
    studies = sample_studies(n_patients, seed, config)
    studies["Image_name"] = studies["Image_name"].str.removesuffix(".png") + FORMATS[image_format]
    train, truth = split_table(studies)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    info = {**params, "complete": False, "counts": {
        "patients": n_patients,
        "images": len(studies),
        "positives": {lab: int((train[lab] == 1).sum()) for lab in LABELS},
        "uncertain": {lab: int((train[lab] == -1).sum()) for lab in LABELS},
    }}
    _write_marker(out, info)

    _write_tables(out, train, truth, _render_all(studies, images, params, config, workers, progress))
    info["complete"] = True
    _write_marker(out, info)
    # who made it, when, with which code (phantom.json stays free of timestamps)
    write_json(out / "provenance.json", {"parameters": params, **environment()})
    return {**info, "out": str(out), "seconds": time.perf_counter() - start}
