"""What every record passes on the way in, whatever its format (a MetaSchedule line, an
Ansor line, a row merged from another schedb file): its run times, its trace's shape,
its target. A failed check raises ``Skip``: the record is left out, its file goes on."""

from __future__ import annotations

from simdjson import Array, Object, Parser

from schedb.errors import SchedbError
from schedb.store import dumps
from schedb.store.records import MIN_RUN_SECS, valid_samples
from schedb.tir.replay import registered_kind
from schedb.ingest.lines import Skip


def parse_json(raw: bytes, bad: str = "not JSON"):
    """``raw`` parsed by simdjson (the whole text validated, Python objects built only for
    what is read), or Skip with ``bad`` and simdjson's reason."""
    try:
        return Parser().parse(raw)  # a parser per text: no proxy outlives it
    except (ValueError, RuntimeError) as e:  # syntax, bad UTF-8, a number over 64 bits
        raise Skip(f"{bad} ({str(e).split(':', 1)[0]})") from None


def check_run_secs(value) -> tuple[list[float] | None, float | None, bool]:
    """(samples, mean, valid) from a log's run times. No times (null, []) or a failure
    (MetaSchedule's 1e10, nan, inf) is a record of a failed measurement; times that are
    not numbers, or numbers no run can take (<= 0, denormal), make the line bad."""
    if value is None or value == []:
        return None, None, False
    if type(value) is not list or not all(type(x) in (float, int) for x in value):  # (bool is not int here)
        raise Skip("run times are not a list of numbers")
    try:
        samples = [float(x) for x in value]
    except OverflowError:
        raise Skip("run time out of range") from None
    if min(samples) < MIN_RUN_SECS:  # (nan compares False: a failure, below)
        raise Skip(f"run time {min(samples)!r} s is not a time")
    valid = valid_samples(samples)
    return samples, (sum(samples) / len(samples) if valid else None), valid


# Instruction lists already found valid, by their minified JSON: a work dir's records share
# a few design-space sketches whose instructions repeat record after record (only their
# decisions differ), and walking each instruction was a quarter of ingest's time.
_CHECKED: set[bytes] = set()
_CHECKED_MAX = 4096


def check_trace(trace, text: bytes | None = None) -> bytes:
    """A MetaSchedule trace's shape, ``[[instruction, ...], [decision, ...]]``, and that
    every instruction kind is registered in this TVM (else nothing can replay it). Returns
    the instructions' minified JSON, which names the checked list. ``text``: the trace's own
    compact JSON, when the caller has it (then the instructions' text is cut from it)."""
    if type(trace) is not Array or len(trace) != 2 or type(insts := trace[0]) is not Array:
        raise Skip("trace is not [instructions, decisions]")
    if text is not None and (cut := _instructions_of(trace, text)) in _CHECKED:
        return cut
    if (key := insts.mini) in _CHECKED:
        return key
    for inst in insts:
        if type(inst) is not Array or len(inst) != 4 or not isinstance(kind := inst[0], str):
            raise Skip("trace instruction is not [kind, inputs, attrs, outputs]")
        if not registered_kind(kind):
            raise Skip(f"trace instruction {kind[:80]!r} is not registered in this TVM")
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED.add(key)
    return key


def _instructions_of(trace, text: bytes) -> bytes | None:
    """The instructions' text cut from the trace's, ``[instructions,decisions]``, before its
    decisions (re-minifying the instructions cost as much as the rest of a line's checks). A
    wrong cut can only miss the cache: what it holds are whole JSON arrays, minified, and a
    JSON array's text is never a proper prefix, or an extension, of another one's."""
    decisions = trace[1]
    if type(decisions) is not Array:
        return None
    tail = decisions.mini
    end = len(text) - len(tail) - 2
    if end > 1 and text[end] == 44 and text[end + 1:-1] == tail:  # (44: ",")
        return text[1:end]
    return None


def trace_misfit(trace, blocks: frozenset) -> str | None:
    """Why a (shape-checked) trace cannot be a schedule of the workload whose blocks are
    ``blocks``, or None. An empty trace schedules nothing: measured, it is the untuned kernel
    and no schedule to reuse. A trace whose leading GetSBlocks (before anything changed the
    workload) get a block the workload has not was tuned for another workload: a work dir
    whose workload lines are out of order attaches records to the wrong one (caught where
    the two workloads' block names differ). Only the leading ones: checking every GetSBlock
    caught no more on the bundled work dirs and cost twice as much."""
    insts = trace[0]
    if len(insts) == 0:
        return "empty trace: it schedules none of the workload's blocks" if blocks - {"root"} else None
    for inst in insts:
        if inst[0] != "GetSBlock":
            break
        attrs = inst[2]
        name = attrs[0] if type(attrs) is Array and len(attrs) else None
        if name not in blocks and not _made_by_trace(name, blocks):
            return (f"trace gets block {str(name)[:80]!r}, which this workload has not "
                    "(tuned for another workload: are the work dir's workload lines in order?)")
    return None


def _made_by_trace(name, blocks: frozenset) -> bool:
    """A block a schedule makes is named after the one it came from: rfactor's ``x_rf``,
    cache_write's ``x_global``, decompose_reduction's ``x_init``."""
    if not isinstance(name, str) or "_" not in name:
        return False
    stem = name
    while "_" in stem:
        stem = stem.rsplit("_", 1)[0]
        if stem in blocks:
            return True
    return False


class TargetCache:
    """Canonical target JSON per raw target (dict or string), parsed once."""

    def __init__(self):
        self.cache: dict[str, str] = {}

    def __call__(self, raw, key=None) -> str:
        """``raw``: a target string, dict or simdjson object (then ``key`` is its text)."""
        if key is None:
            key = raw if isinstance(raw, str) else dumps(raw, sort_keys=True)
        try:
            return self.cache[key]
        except KeyError:
            from schedb.tir.target import canonical, parse_target  # (imports TVM: only on a miss)

            self.cache[key] = canonical(parse_target(raw.as_dict() if type(raw) is Object else raw,
                                                      check_cpu=False))
            return self.cache[key]

    def check(self, raw, key=None) -> str:
        """The canonical target of a record: one this TVM cannot parse makes the record bad."""
        try:
            return self(raw, key)
        except SchedbError as e:
            raise Skip(str(e)) from None
