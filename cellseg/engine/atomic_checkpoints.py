"""Checkpoints are written atomically: a killed or failing save never leaves a partial ``.pth``.

mmengine 0.10.7 saves a checkpoint by serialising it to memory and handing the bytes to the file
backend registered for the path's prefix: ``save_checkpoint`` calls
``get_file_backend(filename).put(bytes, filename)``, and for local paths (prefix '') that is
``LocalBackend.put``, a plain ``open(filename, 'wb').write(...)``. A run killed during that write
(or a full disk) leaves a truncated ``epoch_N.pth`` under the final name, which ``--resume`` then
picks up and fails on, and which also replaced the good file of the same name.

The storage-backend registry is mmengine's extension point for this: this module re-registers the
``local`` backend (and its '' prefix) with :class:`AtomicLocalBackend`, whose ``put`` and
``put_text`` write a temporary file in the same folder, fsync it and rename it over the final
path. Everything else (reads, listing, removal) is mmengine's. Remote backends are untouched.

Imported through ``custom_imports`` in ``configs/_base_/default_runtime.py``. Not covered:
``CheckpointHook`` writes ``last_checkpoint`` with a plain ``open``, and the deprecated
``file_client_args`` route uses ``FileClient``'s own backends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

from cellseg.utils.fileio import atomic_write_bytes


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose writes are atomic (temporary file, fsync, rename)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(filepath, obj.encode(encoding))


register_backend('local', AtomicLocalBackend, force=True, prefixes='')
