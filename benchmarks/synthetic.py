"""Synthetic TVM workloads for the store's scale benchmark: distinct TE compute definitions of
10 kinds (conv2d, dense, depthwise, batch matmul, pooling, residual add, with and without fused
bias+ReLU), shapes drawn from CNN and transformer layer ranges."""

from __future__ import annotations

import random

import tvm
from tvm import te

CHANNELS = [16, 32, 64, 96, 128, 192, 256, 384, 512]
SIZES = [7, 14, 28, 56, 112]
FEATURES = [64, 128, 256, 512, 768, 1024, 2048, 3072, 4096]


def _zero():
    return te.const(0.0, "float32")


def _pad(x, p):
    if p == 0:
        return x
    b, c, h, w = x.shape
    return te.compute((b, c, h + 2 * p, w + 2 * p), lambda a, f, i, j: te.if_then_else(
        te.all(i >= p, i < h + p, j >= p, j < w + p), x[a, f, i - p, j - p], _zero()), name="pad")


def conv2d(b, c, hw, o, k, s, bias_relu):
    x, w = te.placeholder((b, c, hw, hw), name="X"), te.placeholder((o, c, k, k), name="W")
    xp, oh = _pad(x, k // 2), (hw + 2 * (k // 2) - k) // s + 1
    rc, ry, rx = te.reduce_axis((0, c)), te.reduce_axis((0, k)), te.reduce_axis((0, k))
    y = te.compute((b, o, oh, oh), lambda n, f, i, j: te.sum(
        xp[n, rc, i * s + ry, j * s + rx] * w[f, rc, ry, rx], axis=[rc, ry, rx]), name="conv2d")
    if not bias_relu:
        return [x, w, y]
    bias = te.placeholder((o,), name="B")
    return [x, w, bias, te.compute(y.shape, lambda n, f, i, j: te.max(y[n, f, i, j] + bias[f], _zero()),
                                   name="bias_relu")]


def dense(m, n, k, bias_relu):
    a, w = te.placeholder((m, k), name="A"), te.placeholder((n, k), name="W")
    r = te.reduce_axis((0, k))
    y = te.compute((m, n), lambda i, j: te.sum(a[i, r] * w[j, r], axis=r), name="dense")
    if not bias_relu:
        return [a, w, y]
    bias = te.placeholder((n,), name="B")
    return [a, w, bias, te.compute((m, n), lambda i, j: te.max(y[i, j] + bias[j], _zero()), name="bias_relu")]


def depthwise(c, hw, k, s):
    x, w = te.placeholder((1, c, hw, hw), name="X"), te.placeholder((c, 1, k, k), name="W")
    xp, oh = _pad(x, k // 2), (hw + 2 * (k // 2) - k) // s + 1
    ry, rx = te.reduce_axis((0, k)), te.reduce_axis((0, k))
    return [x, w, te.compute((1, c, oh, oh), lambda n, f, i, j: te.sum(
        xp[n, f, i * s + ry, j * s + rx] * w[f, 0, ry, rx], axis=[ry, rx]), name="depthwise_conv2d")]


def batch_matmul(b, m, n, k):
    a, w = te.placeholder((b, m, k), name="A"), te.placeholder((b, n, k), name="B")
    r = te.reduce_axis((0, k))
    return [a, w, te.compute((b, m, n), lambda x, i, j: te.sum(a[x, i, r] * w[x, j, r], axis=r),
                             name="batch_matmul")]


def max_pool(c, hw, k, s):
    x, oh = te.placeholder((1, c, hw, hw), name="X"), (hw - k) // s + 1
    ry, rx = te.reduce_axis((0, k)), te.reduce_axis((0, k))
    return [x, te.compute((1, c, oh, oh), lambda n, f, i, j: te.max(x[n, f, i * s + ry, j * s + rx],
                                                                    axis=[ry, rx]), name="max_pool")]


def add_relu(c, hw):
    x, y = te.placeholder((1, c, hw, hw), name="X"), te.placeholder((1, c, hw, hw), name="Y")
    return [x, y, te.compute(x.shape, lambda n, f, i, j: te.max(x[n, f, i, j] + y[n, f, i, j], _zero()),
                             name="add_relu")]


KINDS = [  # (weight, generator, parameters)
    (40, conv2d, lambda r: (r.choice([1, 1, 4]), r.choice(CHANNELS), r.choice(SIZES), r.choice(CHANNELS),
                            r.choice([1, 3, 3, 5, 7]), r.choice([1, 1, 2]), r.random() < 0.6)),
    (25, dense, lambda r: (r.choice([1, 8, 16, 32, 64, 128, 256, 512]), r.choice(FEATURES), r.choice(FEATURES),
                           r.random() < 0.5)),
    (10, depthwise, lambda r: (r.choice(CHANNELS + [576, 960]), r.choice(SIZES), r.choice([3, 5]), r.choice([1, 2]))),
    (10, batch_matmul, lambda r: (r.choice([8, 12, 16]), r.choice([64, 128, 256, 512]),
                                  r.choice([64, 128, 256, 512]), r.choice([32, 64, 128]))),
    (8, max_pool, lambda r: (r.choice(CHANNELS), r.choice(SIZES), r.choice([2, 3]), 2)),
    (7, add_relu, lambda r: (r.choice(CHANNELS), r.choice(SIZES))),
]


def make_workloads(n: int, seed: int = 0) -> list:
    """``n`` distinct workloads (IRModules), drawn by kind weight."""
    rng = random.Random(seed)
    seen, out = set(), []
    while len(out) < n:
        _, gen, params = rng.choices(KINDS, [k[0] for k in KINDS])[0]
        p = params(rng)
        if (gen.__name__, p) not in seen:
            seen.add((gen.__name__, p))
            out.append(tvm.IRModule({"main": te.create_prim_func(gen(*p))}))
    return out


def _permuted(trace: list, rng: random.Random) -> list:
    """``trace`` with each tile decision's outer factors shuffled: their product, and so the
    loop they tile, is unchanged, and the innermost factor (bounded by its instruction) stays."""
    insts, decisions = trace
    out = []
    for i, d in decisions:
        if insts[i][0] == "SamplePerfectTile" and len(d) > 2:
            outer = list(d[:-1])
            rng.shuffle(outer)
            d = outer + [d[-1]]
        out.append([i, d])
    return [insts, out]


def schedules(mods: list, target, variants: int = 8, seed: int = 0) -> list[tuple[list, list]]:
    """Per workload, ``(traces, args_info)``: ``variants`` traces that are real schedules of it
    (MetaSchedule JSON, without postprocessing) and its arguments as MetaSchedule records them.
    MetaSchedule's design space is sampled once per kind (its block names); each workload of
    that kind gets those traces applied to it (TVM re-samples a tile decision that does not
    fit its loop), and the variants shuffle their outer tile factors. Sampling once per kind
    rather than per workload keeps 5 x 10^4 workloads (10^7 records) to minutes."""
    from tvm import s_tir
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from schedb.search.sample import sample_schedules
    from schedb.tir.replay import as_json
    from schedb.tir.signature import iter_blocks

    rng, templates, out = random.Random(seed), {}, []
    for mod in mods:
        kind = frozenset(str(b.name_hint) for b in iter_blocks(mod["main"].body))
        if kind not in templates:
            templates[kind] = [s.trace.as_json(remove_postproc=True) for s in sample_schedules(mod, target, 2, seed)]
            assert templates[kind], f"MetaSchedule sampled no schedule for {sorted(kind)}"
        traces = []
        for t in templates[kind]:
            sch = s_tir.Schedule(mod, seed=seed + 1)  # the decisions TVM re-samples: the same every run
            s_tir.schedule.Trace.apply_json_to_schedule(t, sch)
            traces.append(as_json(sch.trace.as_json(remove_postproc=True)))
        variants_ = traces + [_permuted(traces[k % len(traces)], rng) for k in range(variants - len(traces))]
        out.append((variants_, [as_json(a.as_json()) for a in ArgInfo.from_prim_func(mod["main"])]))
    return out
