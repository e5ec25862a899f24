"""Models: the zoo and user models, all imported into Relax the same way.

A model spec is one of
  * a zoo name (``alexnet``, ``resnet50``, ... see :data:`ZOO`),
  * ``path/to/model.onnx`` (TVM's ONNX frontend),
  * ``path/to/program.pt2`` (a saved ``torch.export`` program),
  * ``path/to/file.py:factory`` or ``package.module:factory`` (a function that
    returns an ``nn.Module``; the input shape comes from ``input_shape=`` or the
    factory's ``input_shape`` attribute).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from schedb.errors import SchedbError
from schedb.models.zoo import ZOO, ZooEntry
from schedb.spec import check_model_spec, parse_shape  # noqa: F401 - parse_shape re-exported

SEED = 0

# torch 2.13's own torch.export deep-copies its pytree specs, and copying constructs the
# LeafSpec it deprecated: a FutureWarning on every export (attributed to copyreg) that
# no caller can act on. Only that message, from there.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        category=FutureWarning, module="copyreg")


@dataclass
class Model:
    """A model ready for import: how to run it in its own framework, and its inputs."""

    name: str
    source: str  # the spec it was loaded from, kept as provenance
    inputs: list[np.ndarray]
    reference: Callable[[list[np.ndarray]], np.ndarray]  # framework output, for checking TVM
    to_relax: Callable[[], tuple]  # -> (IRModule, list of parameter arrays)
    torch_module: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def input_shapes(self) -> list[list[int]]:
        return [list(x.shape) for x in self.inputs]


def example_inputs(shapes, dtypes) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    out = []
    for shape, dtype in zip(shapes, dtypes):
        if np.dtype(dtype).kind in "iu":
            out.append(rng.integers(0, 100, size=shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def _from_exported(name, source, ep, inputs, module=None) -> Model:
    def reference(xs):
        with torch.no_grad():
            out = ep.module()(*[torch.from_numpy(x) for x in xs])
        return _first(out).numpy()

    def to_relax():
        from tvm import relax
        from tvm.relax.frontend.torch import from_exported_program

        mod = from_exported_program(ep, keep_params_as_input=True)
        mod, params = relax.frontend.detach_params(mod)
        return mod, [p.numpy() for p in params.get("main", [])]

    return Model(name, source, inputs, reference, to_relax, module)


def _first(out):
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out


def from_torch(name: str, source: str, module: torch.nn.Module, shapes, dtypes=None) -> Model:
    dtypes = dtypes or ["float32"] * len(shapes)
    inputs = example_inputs(shapes, dtypes)
    module = module.eval()
    try:
        ep = torch.export.export(module, tuple(torch.from_numpy(x) for x in inputs))
    except Exception as e:  # torch raises many types; all mean "cannot export"
        raise SchedbError(f"{source}: torch.export failed: {e}") from None
    return _from_exported(name, source, ep, inputs, module)


def zoo_model(name: str, input_shape=None) -> Model:
    entry: ZooEntry = ZOO[name]
    torch.manual_seed(SEED)
    module = entry.factory()
    shapes = input_shape or entry.input_shapes
    return from_torch(name, f"zoo:{name}", module, shapes, entry.dtypes)


def _load_onnx(path: Path, input_shape) -> Model:
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        proto = onnx.load(str(path))
    except Exception as e:
        raise SchedbError(f"{path}: not a readable ONNX file ({e})") from None
    if not proto.graph.node:  # an empty file parses as an empty ModelProto
        raise SchedbError(f"{path}: not an ONNX model (it has no graph)")
    init_names = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in init_names]
    shapes, dtypes = [], []
    for k, inp in enumerate(graph_inputs):
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if input_shape:
            dims = list(input_shape[k])
        if any(d is None or d <= 0 for d in dims):
            raise SchedbError(f"{path}: input {inp.name!r} has a dynamic shape; give `input_shape`")
        shapes.append(tuple(dims))
        dtypes.append(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name)
    inputs = example_inputs(shapes, dtypes)
    names = [i.name for i in graph_inputs]

    def reference(xs):
        return _first(ReferenceEvaluator(proto).run(None, dict(zip(names, xs))))

    def to_relax():
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        try:
            mod = from_onnx(proto, shape_dict=dict(zip(names, shapes)), keep_params_in_input=True)
        except Exception as e:
            raise SchedbError(f"{path}: TVM's ONNX frontend cannot import it: {e}") from None
        mod, params = relax.frontend.detach_params(mod)
        return mod, [p.numpy() for p in params.get("main", [])]

    return Model(path.stem, str(path), inputs, reference, to_relax)


def _load_pt2(path: Path) -> Model:
    try:
        ep = torch.export.load(str(path))
    except Exception as e:
        raise SchedbError(f"{path}: not a loadable torch.export program ({e})") from None
    args = ep.example_inputs[0] if ep.example_inputs else None
    if not args:
        raise SchedbError(f"{path}: the program stores no example inputs to take shapes from")
    inputs = [a.detach().numpy() for a in args]
    return _from_exported(path.stem, str(path), ep, inputs)


def _load_factory(spec: str, input_shape) -> Model:
    target, _, fname = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SchedbError(f"{spec}: no such file {path}")
        mod_name = f"schedb_user_{path.stem}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as e:
            raise SchedbError(f"{path}: importing it failed: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise SchedbError(f"{spec}: cannot import module {target!r} ({e})") from None
    factory = getattr(module, fname, None)
    if not callable(factory):
        raise SchedbError(f"{spec}: no factory function {fname!r} in {target}")
    shapes = input_shape or getattr(factory, "input_shape", None)
    if shapes is None:
        raise SchedbError(f"{spec}: give `input_shape` (or set {fname}.input_shape)")
    if shapes and isinstance(shapes[0], int):
        shapes = [tuple(shapes)]
    net = factory()
    if not isinstance(net, torch.nn.Module):
        raise SchedbError(f"{spec}: {fname}() returned {type(net).__name__}, not a torch.nn.Module")
    return from_torch(fname, spec, net, [tuple(s) for s in shapes])


def load_model(spec: str, input_shape: str | list | None = None) -> Model:
    """Load any model spec (see module docs)."""
    shapes = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    if spec in ZOO:
        return zoo_model(spec, shapes)
    path = Path(spec)
    if spec.endswith(".onnx"):
        if not path.is_file():
            raise SchedbError(f"{spec}: no such file")
        return _load_onnx(path, shapes)
    if spec.endswith(".pt2"):
        if not path.is_file():
            raise SchedbError(f"{spec}: no such file")
        return _load_pt2(path)
    if ":" in spec:
        return _load_factory(spec, shapes)
    check_model_spec(spec)  # raises: not a zoo name, a file or a factory
    raise AssertionError(spec)
