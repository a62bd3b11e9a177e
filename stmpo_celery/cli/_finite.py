"""A click type for every float option: ``inf`` and ``nan`` are not numbers a render can use."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.ParamType):
    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return out


FINITE = FiniteFloat()
