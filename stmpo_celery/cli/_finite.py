"""A click type for every float option: ``inf`` and ``nan`` are not numbers a render can use."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.ParamType):
    name = "number"

    def __init__(self, minimum: float | None = None, above: bool = False) -> None:
        self.minimum = minimum
        self.above = above  #: the minimum itself is refused too

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low = self.minimum
        if low is not None and (out < low or (self.above and out == low)):
            self.fail(f"{value!r} is {'not above' if self.above else 'below'} {low:g}: pass a "
                      f"number {'>' if self.above else '>='} {low:g}", param, ctx)
        return out


FINITE = FiniteFloat()
NON_NEGATIVE = FiniteFloat(minimum=0.0)
POSITIVE = FiniteFloat(minimum=0.0, above=True)
