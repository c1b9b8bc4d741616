"""Checks shared by the file formats: exact value types and error messages that list every
problem found, not only the first."""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any


class FormatError(ValueError):
    """A file breaks the format it should have (unreadable, wrong shape or values); the message
    starts with the file's path."""


def is_int(v: Any) -> bool:
    # bool is an int subclass, but `true` as an id is a bug, not an id; numpy ints are Integral.
    # The exact-type test first: the ABC check is the slow one, and it runs ten times per
    # detection.
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def is_real(v: Any) -> bool:
    return (type(v) is float or type(v) is int
            or (isinstance(v, numbers.Real) and not isinstance(v, bool)))


def short_repr(v: Any, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters: messages must stay readable for huge RLEs."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit - 3] + '...'


def raise_problems(error: type[Exception], what: str, problems: Sequence[str],
                   max_problems: int) -> None:
    """Raise ``error`` listing ``problems`` (at most ``max_problems`` of them) under ``what``."""
    if not problems:
        return
    n = len(problems)
    shown = list(problems[:max(max_problems, 0)])
    lines = [f'{what}: {n} problem{"" if n == 1 else "s"}:'] + [f'  {p}' for p in shown]
    if n > len(shown):
        lines.append(f'  ... and {n - len(shown)} more')
    raise error('\n'.join(lines))
