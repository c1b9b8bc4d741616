"""How every command line ends: an expected failure (bad input, a refused or missing checkpoint,
an unreachable download) is one line ``error: <file>: <problem>`` on stderr and exit status 1,
no traceback; ``CELLSEG_DEBUG=1`` shows the traceback instead."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

DEBUG_ENV = 'CELLSEG_DEBUG'


def error_line(error: BaseException) -> str:
    """``error: <file>: <problem>`` for an expected failure."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f'error: {error.filename}: {error.strerror}'
    return f'error: {error}'


def run_tool(main: Callable[[list[str] | None], object],
             argv: list[str] | None = None) -> int:
    """Run a tool's ``main`` and turn its expected failures (``ValueError``, which cellseg's
    format, checkpoint and config errors are, and ``OSError``) into one line and status 1. The
    exit status is what ``main`` returns when that is an int, else 0."""
    try:
        status = main(argv)
        return status if isinstance(status, int) else 0
    except (ValueError, OSError) as e:
        if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
            raise
        print(error_line(e), file=sys.stderr)
        return 1
