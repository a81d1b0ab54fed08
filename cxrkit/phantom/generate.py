"""Write a phantom CXR dataset to disk in the Grand X-Ray Slam Division B layout.

``out/train.csv`` (public table), ``out/truth.csv`` (ground-truth sidecar), ``out/images/``
(8-bit grayscale PNGs, or in another format: 16-bit PNGs or DICOM, :mod:`cxrkit.phantom.formats`,
which decode to exactly the same pixels) and ``out/phantom.json`` (generator parameters and
counts). Every image is rendered from its own ``image_seed``, so the output does not depend on
the worker count; the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
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
from cxrkit.phantom.model import DEFAULT_CONFIG, DRAWABLE, HABITUS_KEYS, PhantomConfig
from cxrkit.phantom.sampling import sample_studies, split_table
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
           "formats.py")

#: One rendering job: image path, findings, habitus, AP view, image seed, side, format, DICOM header.
_Task = tuple[str, dict[str, float], dict[str, float], bool, int, int, str, dict[str, Any]]


def _model_parameters() -> dict[str, Any]:
    """The constants of the label model, as written to :data:`MARKER`."""
    return {
        "causes": list(model.CAUSES),
        "cause_prior": model.CAUSE_PRIOR,
        "persistence": model.PERSISTENCE,
        "weights": model.WEIGHTS,
        "leak": model.LEAK,
        "visibility": model.VISIBILITY,
        "lung_opacity_children": list(model.LUNG_OPACITY_CHILDREN),
        "lo_given_child": model.LO_GIVEN_CHILD,
        "lo_leak": model.LO_LEAK,
        "lo_leak_visibility": model.LO_LEAK_VISIBILITY,
        "flip_pos_to_neg": model.FLIP_POS_TO_NEG,
        "flip_neg_to_pos": model.FLIP_NEG_TO_POS,
        "studies_per_patient": {str(k): v for k, v in model.STUDIES_PER_PATIENT.items()},
        "severity_range": list(model.SEVERITY_RANGE),
        "ap_prob_critical": model.AP_PROB_CRITICAL,
        "ap_prob_other": model.AP_PROB_OTHER,
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
        "config": asdict(config),
        "model": _model_parameters(),
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
    for name in ("train.csv", "truth.csv", MARKER):
        (out / name).unlink(missing_ok=True)


def _tasks(studies: pd.DataFrame, images: Path, size: int, fmt: str, dataset: str) -> Iterator[_Task]:
    """Rendering jobs, one per row of :func:`~cxrkit.phantom.sampling.sample_studies` output
    (``dataset``: the phantom's identity, from which the DICOM UIDs are derived)."""
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
        yield str(images / names[i]), findings, habitus, bool(ap[i]), int(seeds[i]), size, fmt, header


def _render_one(task: _Task) -> None:
    """Render one image with its own generator and write it in the phantom's format."""
    from cxrkit.phantom.formats import write_image
    from cxrkit.phantom.render import render

    path, findings, habitus, view_ap, image_seed, size, fmt, header = task
    img = render(size, findings, habitus, view_ap, np.random.default_rng(image_seed))
    if img.shape != (size, size) or img.dtype != np.uint8:
        raise ValueError(
            f"render returned {img.dtype} {img.shape}, expected uint8 ({size}, {size})"
        )
    write_image(path, img, fmt, header)


def _render_all(studies: pd.DataFrame, images: Path, params: dict[str, Any], workers: int | None,
                progress: bool) -> None:
    """Render every study's image into ``images``, in ``workers`` processes (default
    ``min(os.cpu_count(), 8)``; 1 renders in-process, in row order)."""
    n_workers = max(1, min(os.cpu_count() or 1, 8) if workers is None else workers)
    dataset = f"{GENERATOR} seed={params['seed']} patients={params['n_patients']} size={params['size']}"
    tasks = _tasks(studies, images, params["size"], params["format"], dataset)
    bar = tqdm(total=len(studies), desc="rendering phantom", unit="img", disable=not progress)
    if n_workers == 1:
        for task in tasks:
            _render_one(task)
            bar.update()
    else:
        chunk = max(1, min(64, len(studies) // (n_workers * 8)))
        with Pool(n_workers) as pool:
            for _ in pool.imap_unordered(_render_one, tasks, chunksize=chunk):
                bar.update()
    bar.close()


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
        config: label-model options.
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

    _render_all(studies, images, params, workers, progress)
    train.to_csv(out / "train.csv", index=False, lineterminator="\n")
    truth.to_csv(out / "truth.csv", index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    info["complete"] = True
    _write_marker(out, info)
    # who made it, when, with which code (phantom.json stays free of timestamps)
    write_json(out / "provenance.json", {"parameters": params, **environment()})
    return {**info, "out": str(out), "seconds": time.perf_counter() - start}
