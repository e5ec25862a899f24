"""Option types shared by the commands: durations with units, lists of models."""

from __future__ import annotations

import re

import click

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h)?\s*")


class Duration(click.ParamType):
    """``90s``, ``20m``, ``1.5h`` -> seconds (a float). A bare number is in ``bare`` (the
    option's unit before units were taken: "s" or "m"). ``zero``: 0 is allowed (it means
    "never" / "no limit" for the option)."""

    name = "duration"

    def __init__(self, bare: str = "s", zero: bool = False):
        self.bare, self.zero = bare, zero

    def get_metavar(self, param, ctx=None):  # (click 8.2 passes ctx)
        return "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            seconds = float(value) * _UNITS[self.bare]
        else:
            m = _DURATION.fullmatch(str(value))
            if not m:
                self.fail(f"{value!r} is not a duration: use e.g. 90s, 20m or 1h", param, ctx)
            seconds = float(m[1]) * _UNITS[m[2] or self.bare]
        if seconds < 0 or (seconds == 0 and not self.zero):
            self.fail(f"{value!r}: the duration must be more than 0", param, ctx)
        return seconds


def duration_help(text: str, bare: str) -> str:
    """An option's help with the units it takes."""
    unit = {"s": "seconds", "m": "minutes"}[bare]
    return f"{text} A duration: 90s, 20m, 1h (a bare number is {unit})."


def model_list(ctx, param, value) -> list[str]:
    """A repeatable option whose values may also be comma-separated: one flat list."""
    return [m.strip() for v in value or () for m in v.split(",") if m.strip()]
