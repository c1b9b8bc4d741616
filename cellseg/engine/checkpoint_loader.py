"""The one place where cellseg reads checkpoints: safely, from a file or a URL, once per tool.

Unpickling a checkpoint can run any code its author put in it, so every checkpoint is read with
``torch.load(weights_only=True)``: only tensors, plain Python values and the few classes listed
in ``SAFE_GLOBALS`` are rebuilt; anything else is refused naming the global it asked for. The
list is what mmengine and mmdet write and nothing more: numpy arrays, dtypes and scalars (in
``meta``, the RNG states of ``RNGStateHook`` and the message hub) and mmengine's
``HistoryBuffer`` (the message hub's logged values, which ``--resume`` restores). A user who
trusts an old checkpoint of their own that needs more sets ``CELLSEG_TRUST_CHECKPOINTS=1``.

mmengine's loaders are replaced by registering these schemes again (a documented extension
point; mmengine 0.10.7 calls ``torch.load`` without ``weights_only`` for local files): local
paths, ``http(s)://`` and the model-zoo names mmdet configs use (``torchvision://``,
``open-mmlab://``). A URL is downloaded once into the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, where mmengine and torchvision keep them) and read from there.

Local files are memory-mapped (``mmap=True``; checkpoints torch.save writes are zip archives):
only the tensors that are used are read, and they are dropped with the loaded dict. A tool that
reads a checkpoint's classes before the Runner loads its weights reads it once:
``read_checkpoint`` keeps the dict for the next load of the same file.

Imported through ``custom_imports`` in ``configs/_base_/default_runtime.py``, so every config,
``tools/train.py``, ``tools/test.py`` and ``tools/predict.py`` get it.
"""
from __future__ import annotations

import builtins
import os
import pickle
import re
import urllib.error
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import (
    CheckpointLoader,
    get_deprecated_model_names,
    get_external_models,
    get_torchvision_models,
)

TRUST_ENV = 'CELLSEG_TRUST_CHECKPOINTS'


def _numpy_globals() -> list:
    # numpy 2 pickles arrays and scalars as numpy._core.multiarray.*, numpy 1 (checkpoints written
    # before numpy 2) as numpy.core.multiarray.*: the same functions under both names
    from numpy._core import multiarray

    found = [np.ndarray, np.dtype]
    for fn in (multiarray._reconstruct, multiarray.scalar):
        found += [fn, (fn, f'numpy.core.multiarray.{fn.__name__}')]
    # a numpy dtype pickles as its class (numpy.dtypes.Float64DType, ...): all of them are plain
    # data types, and a checkpoint's meta may hold a scalar of any
    found += [getattr(np.dtypes, name) for name in np.dtypes.__all__
              if name.endswith('DType') and name != 'StringDType']
    return found


# getattr: how a HistoryBuffer pickles its statistics methods (getattr(HistoryBuffer, 'min')); the
# unpickler still calls only the globals listed here, so it reaches nothing beyond their attributes
SAFE_GLOBALS = [*_numpy_globals(), HistoryBuffer, builtins.getattr]


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded; the message names the file."""


def _trusted() -> bool:
    return os.environ.get(TRUST_ENV, '') not in ('', '0')


def _refused_global(error: Exception) -> str | None:
    found = re.search(r'GLOBAL (\S+)', str(error))
    return found.group(1) if found else None


def _torch_load(path: str, map_location: Any) -> dict:
    mmap = zipfile.is_zipfile(path)
    if _trusted():
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        name = _refused_global(e)
        if name is None:
            raise CheckpointError(f'{path}: not a readable checkpoint ({str(e).splitlines()[0]})'
                                  ) from None
        raise CheckpointError(
            f'{path}: refused: loading it would call {name}, which checkpoints written by '
            f'mmengine or mmdet never hold (unpickling can run code). If it is your own '
            f'checkpoint, load it anyway with {TRUST_ENV}=1') from None


_kept: tuple[str, dict] | None = None


def read_checkpoint(filename: str | os.PathLike, map_location: Any = 'cpu') -> dict:
    """Load a checkpoint (a local path or a URL) and keep it for the next load of the same file
    (the Runner's, or ``mmdet.apis.init_detector``'s), so a tool reads it once."""
    global _kept
    checkpoint = CheckpointLoader.load_checkpoint(os.fspath(filename), map_location)
    _kept = (_key(os.fspath(filename)), checkpoint)
    return checkpoint


def _key(filename: str) -> str:
    return filename if '://' in filename else os.path.realpath(os.path.expanduser(filename))


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_local_checkpoint(filename: str, map_location: Any = None) -> dict:
    """A local checkpoint, read safely (see the module doc)."""
    global _kept
    if _kept is not None and _kept[0] == _key(filename):
        checkpoint, _kept = _kept[1], None
        return checkpoint
    path = os.path.expanduser(filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{filename}: no such checkpoint file')
    try:
        return _torch_load(path, map_location)
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # truncated or not a checkpoint
        raise CheckpointError(f'{path}: not a readable checkpoint ({str(e).splitlines()[0]})'
                              ) from None


def hub_cache_path(url: str) -> Path:
    """Where a downloaded checkpoint is kept: torch's hub cache, as mmengine and torchvision
    keep theirs (``$TORCH_HOME/hub/checkpoints/<file name>``)."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return Path(torch.hub.get_dir()) / 'checkpoints' / name


def resolve_url(filename: str) -> str:
    """The http(s) URL of a model-zoo name (``torchvision://resnet50``,
    ``open-mmlab://resnext50_32x4d``); other names are returned as they are."""
    for prefix in ('torchvision://', 'modelzoo://'):
        if filename.startswith(prefix):
            return get_torchvision_models()[filename[len(prefix):]]
    for prefix in ('open-mmlab://', 'openmmlab://'):
        if filename.startswith(prefix):
            name = filename[len(prefix):]
            name = get_deprecated_model_names().get(name, name)
            return get_external_models()[name]
    return filename


def is_url(filename: str | os.PathLike | None) -> bool:
    return isinstance(filename, str) and resolve_url(filename).startswith(('http://', 'https://'))


def fetch(filename: str, offline_hint: str = '') -> Path:
    """The local copy of a checkpoint URL (or model-zoo name), downloaded into the hub cache
    the first time. A failed download raises ``CheckpointError`` naming the URL and the path
    where a copy can be placed instead; ``offline_hint`` is appended to it."""
    url = resolve_url(filename)
    path = hub_cache_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # torch writes a temporary file beside `path` and moves it there when complete
        torch.hub.download_url_to_file(url, os.fspath(path), progress=False)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, 'reason', None) or e
        raise CheckpointError(f'{url}: cannot be downloaded ({reason}); place a copy at {path}'
                              + (f', {offline_hint}' if offline_hint else '')) from None
    return path


@CheckpointLoader.register_scheme(
    prefixes=('http://', 'https://', 'torchvision://', 'modelzoo://', 'open-mmlab://',
              'openmmlab://'), force=True)
def load_url_checkpoint(filename: str, map_location: Any = None) -> dict:
    """A checkpoint URL or model-zoo name: downloaded once into the hub cache, read safely."""
    global _kept
    if _kept is not None and _kept[0] == _key(filename):
        checkpoint, _kept = _kept[1], None
        return checkpoint
    return load_local_checkpoint(os.fspath(fetch(filename)), map_location)
