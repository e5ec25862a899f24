"""Targets: the host by default, shorthands and JSON accepted, one canonical JSON stored."""

from __future__ import annotations

import json
import os
import shlex

from schedb.errors import SchedbError


def host_target_dict() -> dict:
    """llvm for this CPU (TVM's own detection), so AVX-512 is used where it exists."""
    from tvm.target import codegen

    return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": os.cpu_count() or 1}


def parse_target(spec: str | dict | None):
    """``None`` (host), a dict, a JSON string, or a shorthand such as
    ``llvm -mcpu=skylake-avx512`` -> ``tvm.target.Target``."""
    import tvm

    if spec is None or spec == "host":
        cfg = host_target_dict()
    elif isinstance(spec, dict):
        cfg = spec
    elif spec.lstrip().startswith("{"):
        try:
            cfg = json.loads(spec)
        except json.JSONDecodeError as e:
            raise SchedbError(f"bad target JSON {spec!r}: {e}") from None
    else:
        cfg = shorthand_to_dict(spec)
    try:
        return tvm.target.Target(cfg)
    except Exception as e:  # TVM raises its own error types for bad keys
        raise SchedbError(f"bad target {spec!r}: {e}") from None


def shorthand_to_dict(spec: str) -> dict:
    """``"llvm -mcpu=x -num-cores=4 -keys=cpu"`` -> ``{"kind": "llvm", "mcpu": "x", ...}``.

    Also reads legacy (Ansor-era) target strings, which carry the same flags."""
    try:
        words = shlex.split(spec)
    except ValueError as e:  # e.g. an unbalanced quote
        raise SchedbError(f"bad target {spec!r}: {e}") from None
    if not words:
        raise SchedbError("empty target")
    cfg: dict = {"kind": words[0]}
    for w in words[1:]:
        if not w.startswith("-"):
            raise SchedbError(f"bad target {spec!r}: {w!r} is not a -key=value flag")
        key, eq, value = w.lstrip("-").partition("=")
        if not eq:
            cfg[key] = True
        elif key in ("keys", "mattr", "libs"):
            cfg[key] = value.split(",")
        elif value.lstrip("-").isdigit():
            cfg[key] = int(value)
        else:
            cfg[key] = value
    return cfg


def canonical(target) -> str:
    """The JSON that is stored next to every result: sorted keys, TVM's full export."""
    return json.dumps(_plain(target.export()), sort_keys=True, separators=(",", ":"))


def _plain(obj):
    # Target.export() holds TVM containers (Array, Map, String); make them JSON types.
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj if not hasattr(obj, "__tvm_ffi_object__") else str(obj)
    if hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if hasattr(obj, "__iter__"):
        return [_plain(v) for v in obj]
    return str(obj)


_GPU_INTRINSICS = ("cuda", "rocm", "hexagon")


def load_intrinsics(target) -> None:
    """Register only the tensor intrinsics a CPU target can use.

    MetaSchedule imports ``tvm.s_tir.tensor_intrin``, which registers the
    intrinsics of every backend: ~50 s here, 44 s of it CUDA, ROCm and Hexagon.
    For an llvm target those three are put in place as empty modules first."""
    import sys
    import types

    if target.kind.name != "llvm" or "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    for name in _GPU_INTRINSICS:
        full = f"tvm.s_tir.tensor_intrin.{name}"
        sys.modules.setdefault(full, types.ModuleType(full))
    import tvm.s_tir.tensor_intrin  # noqa: F401
