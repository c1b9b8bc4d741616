"""The one place where cellseg makes torch >= 2.6 load mmengine checkpoints.

torch 2.6 changed ``torch.load`` to ``weights_only=True`` by default. mmengine checkpoints pickle
more than tensors (the message hub's ``HistoryBuffer``, numpy scalars and arrays in ``meta``), so
``--resume`` and ``load_from`` fail with "Weights only load failed". mmengine 0.10.7 calls
``torch.load`` without the argument, through the loader registered for local paths (prefix ''),
which is a documented extension point: this module re-registers that loader with
``weights_only=False``. Only local files the user names are loaded this way; they are trusted as
the user's own checkpoints (unpickling runs code, as it did before torch 2.6). Remote schemes
(http, s3) keep mmengine's loaders.

The file is memory-mapped (``mmap=True``; checkpoints torch.save writes are zip archives): only
the tensors that are used are read, and they are dropped with the loaded dict. Read whole, a
checkpoint with its AdamW state (3x the weights) stays in the process's heap after the weights
are copied out (0.46 GiB more resident memory for cell_r50_dense; docs/speed.md).

Imported through ``custom_imports`` in ``configs/_base_/default_runtime.py``, so every config,
``tools/train.py`` and ``tools/test.py`` get it.
"""
from __future__ import annotations

import os
import zipfile

import torch
from mmengine.runner.checkpoint import CheckpointLoader


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_trusted_local_checkpoint(filename: str, map_location=None) -> dict:
    """mmengine's local loader with ``weights_only=False`` (see the module doc for why)."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False,
                      mmap=zipfile.is_zipfile(filename))
