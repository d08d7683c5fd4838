"""Numeric options: the right type, finite, within a documented range; seconds that look like
milliseconds say so.

    _seconds(0.001, 60)("nan")   # ValueError: expected a finite number, got 'nan'
    _num(int, 1, 1000)(1.9)      # ValueError: expected an integer, got 1.9
"""

from __future__ import annotations

import math
from typing import Any


class Number:
    """Parser of a numeric option: the right type (an integer option refuses 1.9), finite (nan and inf
    are refused) and within [lo, hi] (lo excluded when `lo_open`). `unit` "s" marks seconds: a value
    above the range that would fit as milliseconds says so."""

    def __init__(self, kind: type, lo: float, hi: float, *, lo_open: bool = False, unit: str = "") -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.unit = kind, lo, hi, lo_open, unit
        self.__name__ = "_num"

    def describe(self) -> str:
        """The documented range, e.g. `0.001 ≤ x ≤ 60 s` (also shown in --help)."""
        lo = f"{self.lo:g} < x" if self.lo_open else f"{self.lo:g} ≤ x"
        return f"{'integer ' if self.kind is int else ''}{lo} ≤ {self.hi:g}{' ' + self.unit if self.unit else ''}"

    def __call__(self, v: Any) -> Any:
        what = "an integer" if self.kind is int else "a number"
        if isinstance(v, bool):
            raise ValueError(f"expected {what}, got {v!r}")
        if self.kind is int:
            if isinstance(v, float) or (isinstance(v, str) and not v.strip().lstrip("+-").isdigit()):
                raise ValueError(f"expected an integer, got {v!r}")
        try:
            n = self.kind(v)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"expected {what}, got {v!r}") from None
        if not math.isfinite(n):
            raise ValueError(f"expected a finite number, got {v!r}")
        if n < self.lo or (n == self.lo and self.lo_open) or n > self.hi:
            hint = ""
            if self.unit == "s" and n > self.hi and self.lo <= n / 1000 <= self.hi:
                hint = f" ({v!r} looks like milliseconds: Corral options are seconds, e.g. {n / 1000:g})"
            raise ValueError(f"must be {self.describe()}, got {v!r}{hint}")
        return n


def _num(kind: type, lo: float, hi: float, *, lo_open: bool = False, unit: str = "") -> Number:
    return Number(kind, lo, hi, lo_open=lo_open, unit=unit)


def _seconds(lo: float, hi: float, *, lo_open: bool = False) -> Number:
    return Number(float, lo, hi, lo_open=lo_open, unit="s")
