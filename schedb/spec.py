"""What a user names, checked before TVM or PyTorch is imported (seconds each): a model
spec and its input shape. ``schedb.models.load_model`` loads what passes."""

from __future__ import annotations

import difflib
from pathlib import Path

from schedb.errors import SchedbError

# The zoo's names (schedb.models.zoo.ZOO, which needs PyTorch to import; a test keeps the two equal).
ZOO_NAMES = ("alexnet", "resnet18", "resnet50", "googlenet", "vgg16", "mobilenet_v2", "mnasnet1_0",
             "efficientnet_b0", "transformer_encoder", "tiny_cnn", "tiny_cnn_wide", "tiny_mlp")


def parse_shape(text: str | None) -> list[tuple[int, ...]] | None:
    """``"1,3,224,224"`` or ``"1,128;1,128"`` -> list of shapes."""
    if not text:
        return None
    try:
        return [tuple(int(d) for d in part.split(",")) for part in text.split(";")]
    except ValueError:
        raise SchedbError(f"bad `input_shape` {text!r}: expected e.g. 1,3,224,224") from None


def check_model_spec(spec: str, input_shape: str | None = None) -> None:
    """Raise SchedbError unless ``spec`` names a zoo model, an existing .onnx / .pt2 file or a
    factory (``file.py:factory`` with an existing file, ``package.module:factory``), and the
    input shape parses. A near miss of a zoo name is named ("did you mean")."""
    parse_shape(input_shape)
    if spec in ZOO_NAMES:
        return
    if spec.endswith((".onnx", ".pt2")):
        if not Path(spec).is_file():
            raise SchedbError(f"{spec}: no such file")
        return
    if ":" in spec:
        target, _, fname = spec.rpartition(":")
        if not target or not fname.isidentifier():
            raise SchedbError(f"{spec}: expected file.py:factory or package.module:factory")
        if target.endswith(".py") and not Path(target).is_file():
            raise SchedbError(f"{spec}: no such file {target}")
        return
    close = difflib.get_close_matches(spec, ZOO_NAMES, n=1) or difflib.get_close_matches(
        spec.lower().replace("-", "_"), ZOO_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SchedbError(
        f"unknown model {spec!r}{hint}: use a zoo name ({', '.join(sorted(ZOO_NAMES))}), "
        "a .onnx or .pt2 file, or file.py:factory / package.module:factory")
