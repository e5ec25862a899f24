"""Targets: the host by default, shorthands and JSON accepted, one canonical JSON stored."""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
from typing import NamedTuple

from schedb.errors import SchedbError


def host_target_dict() -> dict:
    """llvm for this CPU (TVM's own detection), so AVX-512 is used where it exists."""
    from tvm.target import codegen

    return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": host_cores()}


def host_cores() -> int:
    """The physical cores this process may run on: the host target's ``num-cores`` and the
    threads TVM's and PyTorch's pools get."""
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    logical, physical = psutil.cpu_count() or usable, psutil.cpu_count(logical=False) or usable
    return max(1, usable * physical // logical)


def use_host_cores() -> None:
    """TVM's runtime starts a thread per two logical CPUs (it assumes two hardware threads a
    core): where each core runs one, half the cores idle and every kernel, measured or
    deployed, runs on half the machine. Unless the user set it, ``TVM_NUM_THREADS`` is the
    host's physical cores, set before TVM's thread pool starts (it reads it once) and
    before any measuring process starts (they inherit it)."""
    if "TVM_NUM_THREADS" not in os.environ:  # (counting the cores imports psutil: only when needed)
        os.environ["TVM_NUM_THREADS"] = str(host_cores())


def parse_target(spec: str | dict | None, check_cpu: bool = True):
    """``None`` (host), a dict, a JSON string, or a shorthand such as
    ``llvm -mcpu=skylake-avx512`` -> ``tvm.target.Target``.

    An llvm ``mcpu`` this LLVM does not know is refused (TVM only logs it and compiles
    for a generic CPU); ``check_cpu=False`` takes it as is, for targets read from stored
    records, which another machine's LLVM may have known."""
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
    # Before TVM sees it: TVM logs an unknown mcpu and compiles for a generic CPU.
    if check_cpu and isinstance(cfg, dict) and cfg.get("kind") == "llvm" and isinstance(cfg.get("mcpu"), str):
        known = llvm_cpus(cfg.get("mtriple"))
        if str(cfg["mcpu"]) not in known:
            raise SchedbError(f"unknown mcpu {cfg['mcpu']!r} for LLVM ({_llvm_triple(cfg.get('mtriple'))}); "
                              f"it knows: {', '.join(sorted(known))}")
    try:
        target = tvm.target.Target(cfg)
    except Exception as e:  # TVM raises its own error types for bad keys
        raise SchedbError(f"bad target {spec!r}: {e}") from None
    cores = target.attrs.get("num-cores")
    if cores is not None and int(cores) < 1:  # TVM takes any integer; no machine has that
        raise SchedbError(f"bad target {spec!r}: num-cores {int(cores)} is not a positive count")
    return target


def check_target(spec: str | None) -> None:
    """What can be checked of a target spec without TVM (seconds to import): JSON that
    parses to an object with a ``kind``, or a shorthand of -key=value flags. parse_target
    checks the rest (the mcpu against LLVM's list, TVM's own keys)."""
    if spec is None or spec == "host":
        return
    if spec.lstrip().startswith("{"):
        try:
            cfg = json.loads(spec)
        except json.JSONDecodeError as e:
            raise SchedbError(f"bad target JSON {spec!r}: {e}") from None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("kind"), str):
            raise SchedbError(f"bad target {spec!r}: a JSON target is an object with a \"kind\"")
    else:
        shorthand_to_dict(spec)


@functools.lru_cache(maxsize=None)
def llvm_cpus(mtriple: str | None = None) -> frozenset[str]:
    """The CPU names (``mcpu``) this LLVM knows for ``mtriple`` (default: the host's)."""
    import tvm
    from tvm.target import codegen

    cfg = {"kind": "llvm", **({"mtriple": mtriple} if mtriple else {})}
    return frozenset(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target(cfg)))


def _llvm_triple(mtriple: str | None) -> str:
    from tvm.target import codegen

    return mtriple or str(codegen.llvm_get_system_triple())


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


# ---------------------------------------------------------------- distance between targets
# A schedule is a program transformation: tuned for one CPU it still builds and runs on
# another of the same kind, only perhaps slower. So records of every target of the same
# kind are candidates, ranked by how alike the two targets are (smaller is closer):
SAME = 0        # the same canonical target
SAME_CPU = 1    # the same mcpu (and triple): only num-cores or other flags differ
SAME_VECTOR = 2  # the same widest vector ISA (avx512 / avx2 / avx / sse / sve / neon)
SAME_ARCH = 3   # the same architecture (x86_64, aarch64, ...)
SAME_KIND = 4   # the same target kind (llvm -> llvm), nothing else in common
# Another kind (llvm vs cuda) is None: its schedules are never candidates.

# Widest first: the first feature a CPU has names its vector ISA.
_VECTOR_ISAS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse2", "sse"),
                ("sve", "sve"), ("neon", "neon"))


def _parse(target: str) -> dict | None:
    try:
        cfg = json.loads(target) if target else None
    except (json.JSONDecodeError, TypeError):
        return None
    return cfg if isinstance(cfg, dict) and "kind" in cfg else None


@functools.lru_cache(maxsize=None)
def _vector_isa(target: str) -> str | None:
    """The widest vector ISA LLVM gives the target's CPU (None: not an llvm CPU LLVM knows)."""
    import tvm
    from tvm.target import codegen

    cfg = _parse(target)
    if cfg is None or cfg["kind"] != "llvm":
        return None
    try:
        features = set(codegen.llvm_get_cpu_features(tvm.target.Target(cfg)))
    except Exception:  # an mcpu or triple this LLVM does not know
        return None
    return next((isa for feature, isa in _VECTOR_ISAS if feature in features), None)


def _arch(cfg: dict) -> str:
    # llvm without a triple compiles for this host's architecture.
    triple = cfg.get("mtriple")
    return triple.split("-")[0] if triple else platform.machine()


@functools.lru_cache(maxsize=None)
def distance(a: str, b: str) -> int | None:
    """How far apart two canonical targets are for reusing a schedule (SAME ... SAME_KIND),
    None when a schedule of one is no candidate for the other (another kind, or unreadable)."""
    if a == b:
        return SAME
    ca, cb = _parse(a), _parse(b)
    if ca is None or cb is None or ca["kind"] != cb["kind"]:
        return None
    cpu = ("mcpu", "mtriple", "arch")
    if any(ca.get(k) for k in cpu) and all(ca.get(k) == cb.get(k) for k in cpu):
        return SAME_CPU
    if ca["kind"] != "llvm":
        return SAME_KIND
    isa = _vector_isa(a)
    if isa is not None and isa == _vector_isa(b) and _arch(ca) == _arch(cb):
        return SAME_VECTOR
    return SAME_ARCH if _arch(ca) == _arch(cb) else SAME_KIND


def max_distance(same_target_only: bool) -> int | None:
    """How far a record's target may be from this one: SAME in strict mode, else any
    target of the kind (None)."""
    return SAME if same_target_only else None


def label(target: str) -> str:
    """A short readable name: ``llvm emeraldrapids (avx512)``."""
    cfg = _parse(target)
    if cfg is None:
        return target or "(no target)"
    name = " ".join(str(cfg[k]) for k in ("kind", "mtriple", "mcpu", "arch") if cfg.get(k))
    isa = _vector_isa(target)
    return f"{name} ({isa})" if isa else name


def coverage_note(counts: dict[str, int], target: str, same_target_only: bool = False) -> str | None:
    """One plain sentence when the database holds no record for ``target`` (``counts``:
    valid records per target), saying what is used instead; None when it has some."""
    if counts.get(target):
        return None
    usable = {t: n for t, n in counts.items() if distance(t, target) is not None}
    if not usable:
        return (f"the database holds no schedules for {label(target)} or any target of its kind"
                + (f" ({sum(counts.values())} for other kinds)" if counts else ""))
    listed = ", ".join(f"{n} for {label(t)}" for t, n in sorted(usable.items(), key=lambda x: -x[1]))
    if same_target_only:
        return (f"the database holds no schedules for {label(target)}; {listed} are ignored "
                f"(`same_target_only`)")
    return (f"the database holds no schedules for {label(target)}; {listed} are used as candidates "
            f"and measured here")


# ---------------------------------------------------------------- the vector unit of a target
class VectorUnit(NamedTuple):
    """What a schedule's register tiling depends on: the vector ISA, its 32-bit lanes per
    register and its vector register count (LLVM's CPU features, ``-mattr`` included)."""

    isa: str
    lanes: int  # float32 lanes per vector register
    registers: int  # architectural vector registers


# zmm0-31; ymm0-15; xmm0-15 (x86-64); SVE and NEON: 32 registers, 128 bits at least.
_UNITS = {"avx512": (16, 32), "avx2": (8, 16), "avx": (8, 16), "sse": (4, 16), "sve": (4, 32), "neon": (4, 32)}


def vector_unit(target: str) -> VectorUnit | None:
    """The vector unit of a canonical target (None: not an llvm CPU with a known vector ISA)."""
    isa = _vector_isa(target)
    return None if isa is None else VectorUnit(isa, *_UNITS[isa])
