"""Protocol rules: conditions on visit results, evaluated for many patients at once.

A condition is a small expression over the labs measured at the visit and the time
in the current phase, for example ``lh < 4 and weeks_in_phase >= 8`` or
``sperm_conc >= 15``. Comparisons with a lab not measured at that visit are false.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass

import numpy as np

from .labs import LAB_VALUES

__all__ = ["Condition", "CONDITION_NAMES", "parse_condition"]

LAB_NAMES = LAB_VALUES
TIME_NAMES = ("days_in_phase", "weeks_in_phase", "months_in_phase", "weeks", "months")
CONDITION_NAMES = LAB_NAMES + TIME_NAMES
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


@dataclass(frozen=True)
class Condition:
    text: str
    tree: ast.expr

    @property
    def names(self) -> set[str]:
        return {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name)}

    def evaluate(self, values: dict[str, np.ndarray]) -> np.ndarray:
        """Boolean array over patients; NaN values make a comparison false."""
        return np.asarray(self._eval(self.tree, values), dtype=bool)

    def _eval(self, node, values):
        if isinstance(node, ast.BoolOp):
            parts = [self._eval(v, values) for v in node.values]
            op = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = parts[0]
            for p in parts[1:]:
                out = op(out, p)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return np.logical_not(self._eval(node.operand, values))
        if isinstance(node, ast.Compare):
            left = self._value(node.left, values)
            out = None
            for op, right_node in zip(node.ops, node.comparators):
                right = self._value(right_node, values)
                with np.errstate(invalid="ignore"):
                    res = _CMP[type(op)](left, right)
                # a lab not measured (NaN) makes any comparison false, != included
                res = np.logical_and(res, ~(np.isnan(left) | np.isnan(right)))
                out = res if out is None else np.logical_and(out, res)
                left = right
            return out
        raise AssertionError("validated at parse time")

    @staticmethod
    def _value(node, values):
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -float(node.operand.value)
        return values[node.id]


def parse_condition(text, what: str = "when") -> Condition:
    """Parse and check a condition; errors name the offending part and what is allowed."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what}: expected a condition such as 'lh < 4', got {text!r}")
    if len(text) > 2000:
        raise ValueError(f"{what}: a condition of {len(text)} characters is too long "
                         f"(at most 2000)")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        _check(tree, text, what)
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"{what}: cannot parse {text[:80]!r}; write comparisons joined by "
                         f"'and'/'or', e.g. 'lh < 4 and weeks_in_phase >= 8'") from None
    return Condition(text.strip(), tree)


def _check(node, text, what):
    allowed = ", ".join(CONDITION_NAMES)
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, text, what)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check(node.operand, text, what)
    elif isinstance(node, ast.Compare):
        if not all(type(op) in _CMP for op in node.ops):
            raise ValueError(f"{what}: only <, <=, >, >=, ==, != are allowed in {text!r}")
        for side in [node.left, *node.comparators]:
            if isinstance(side, ast.Name):
                if side.id not in CONDITION_NAMES:
                    raise ValueError(f"{what}: unknown name {side.id!r} in {text!r}; "
                                     f"allowed: {allowed}")
            elif isinstance(side, ast.Constant) and isinstance(side.value, (int, float)) \
                    and not isinstance(side.value, bool):
                pass
            elif isinstance(side, ast.UnaryOp) and isinstance(side.op, ast.USub) \
                    and isinstance(side.operand, ast.Constant) \
                    and isinstance(side.operand.value, (int, float)):
                pass
            else:
                raise ValueError(f"{what}: compare names with numbers only, in {text!r}")
    else:
        raise ValueError(f"{what}: {text!r} is not a comparison; write e.g. 'lh < 4', "
                         f"with names from: {allowed}")
