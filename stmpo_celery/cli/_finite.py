"""A click type for every float option: ``inf`` and ``nan`` are not numbers a render can use."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.ParamType):
    name = "number"

    def __init__(self, minimum: float | None = None) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.minimum is not None and out < self.minimum:
            self.fail(f"{value!r} is below {self.minimum:g}: pass a number >= {self.minimum:g}",
                      param, ctx)
        return out


FINITE = FiniteFloat()
NON_NEGATIVE = FiniteFloat(minimum=0.0)
