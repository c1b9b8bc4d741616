"""Atomic file writes: a killed process never leaves a half-written file that looks complete."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    """The process umask. POSIX can only read it by setting it, and for that moment every file
    any thread creates gets the temporary value: so this runs once, at import (before writer
    threads exist), never per write. A umask changed later by the program is not seen."""
    mask = os.umask(0o077)  # restrictive while it lasts, should another thread create a file
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, 'O_DIRECTORY'):  # make the rename itself survive a power cut (POSIX only)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Serialise ``obj`` as compact JSON and write it atomically."""
    return atomic_write_bytes(path, json.dumps(obj, separators=(',', ':')).encode())


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN float (an undefined score, say) as None: JSON has no NaN, and
    ``json.dumps`` would write one that other readers refuse."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj
