"""Exercise grading and the notebooks' claims: :func:`check` grades a student's answer, :func:`expect`
asserts what the text says about a figure (in the student setting)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

#: ``PAA_CHECK_SOLUTIONS=1`` (the tests): an unanswered exercise is an error (the solution was injected).
CHECK_SOLUTIONS_ENV = "PAA_CHECK_SOLUTIONS"


class ExerciseError(AssertionError):
    """A wrong answer (or, under ``PAA_CHECK_SOLUTIONS=1``, a missing one); the message gives a hint."""


def _fast() -> bool:
    return os.environ.get("PAA_FAST") == "1"


def _same(answer: Any, expected: Any, rel_tol: float, abs_tol: float) -> bool:
    if isinstance(expected, (Tensor, np.ndarray)) or isinstance(answer, (Tensor, np.ndarray)):
        a = answer.detach().cpu().numpy() if isinstance(answer, Tensor) else np.asarray(answer)
        b = expected.detach().cpu().numpy() if isinstance(expected, Tensor) else np.asarray(expected)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=rel_tol, atol=abs_tol, equal_nan=True))
        return bool((a == b).all())
    if isinstance(expected, bool) or isinstance(answer, bool):
        return isinstance(answer, (bool, np.bool_)) and bool(answer) == bool(expected)
    if isinstance(expected, (int, float)) and isinstance(answer, (int, float, np.integer, np.floating)):
        return math.isclose(float(answer), float(expected), rel_tol=rel_tol, abs_tol=abs_tol)
    if isinstance(expected, (set, frozenset)):
        return isinstance(answer, (set, frozenset, list, tuple)) and set(answer) == set(expected)
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(answer, (list, tuple))
            and len(answer) == len(expected)
            and all(_same(a, b, rel_tol, abs_tol) for a, b in zip(answer, expected))
        )
    if isinstance(expected, Mapping):
        return (
            isinstance(answer, Mapping)
            and set(answer) == set(expected)
            and all(_same(answer[k], expected[k], rel_tol, abs_tol) for k in expected)
        )
    return answer == expected


def check(
    exercise: str, answer: Any, expected: Any, *, hint: str, why: str = "", rel_tol: float = 1e-3, abs_tol: float = 1e-6
) -> None:
    """Grade a student's ``answer`` of ``exercise`` against ``expected`` (a value, or a predicate).

    * not answered yet (``answer`` is ``...`` or None): prints the hint — Run All goes on; under
      ``PAA_CHECK_SOLUTIONS=1`` (the tests inject the hidden solutions) it raises instead;
    * right: prints "correct" and ``why``;
    * wrong: raises :class:`ExerciseError` with the hint (never the expected value).

    Args:
        exercise: its name, ``"Exercise N"``.
        answer: what the student computed.
        expected: the right value (numbers within the tolerances, tensors / arrays element-wise, sets as
            sets, lists in order, dicts by key), or a predicate ``answer -> bool``.
        hint: shown while unanswered and with a wrong answer.
        why: shown with a right answer.
        rel_tol: relative tolerance for numbers.
        abs_tol: absolute tolerance for numbers.

    Raises:
        ExerciseError: a wrong answer, or a missing one under ``PAA_CHECK_SOLUTIONS=1``.
    """
    if answer is ... or answer is None:
        if os.environ.get(CHECK_SOLUTIONS_ENV) == "1":
            raise ExerciseError(f"{exercise}: no answer although {CHECK_SOLUTIONS_ENV}=1 (was the solution injected?)")
        print(f"{exercise}: not answered yet — replace the ... above. Hint: {hint}")
        return
    ok = bool(expected(answer)) if callable(expected) else _same(answer, expected, rel_tol, abs_tol)
    if not ok:
        shown = repr(answer)
        raise ExerciseError(f"{exercise}: {shown[:200]} is not right. Hint: {hint}")
    print(f"{exercise}: correct ✓ {why}".rstrip())


def expect(ok: bool, claim: str) -> None:
    """A claim the notebook's text makes about a figure, with its numbers in ``claim``.

    Printed with ✓ when it holds; when it does not: an ``AssertionError`` in the student setting (so a
    regression fails CI), only a printed ✗ with ``PAA_FAST=1`` (a few iterations cannot show the paper's
    figures).

    Args:
        ok: whether the claim holds.
        claim: the claim, with the numbers it rests on.

    Raises:
        AssertionError: the claim does not hold, in the student setting.
    """
    if ok:
        print(f"✓ {claim}")
    elif _fast():
        print(f"✗ (PAA_FAST=1: not asserted) {claim}")
    else:
        raise AssertionError(f"the notebook's claim does not hold: {claim}")


__all__ = ["CHECK_SOLUTIONS_ENV", "ExerciseError", "check", "expect"]
