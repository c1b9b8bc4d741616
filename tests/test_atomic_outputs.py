"""A write that fails midway leaves the previous file intact and nothing at the final path.

Checkpoints go through mmengine's ``save_checkpoint`` and the file backend that
``cellseg.engine.atomic_checkpoints`` registers; annotation files through
``cellseg.formats.coco_conversion.convert`` (``cellseg.utils.fileio``). The failure is a disk
that fills up halfway through the bytes. (Submission files are covered in
tests/test_submission.py.)
"""
from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.runner.checkpoint import save_checkpoint
from mmengine.utils import import_modules_from_strings

from cellseg.engine.atomic_checkpoints import AtomicLocalBackend
from cellseg.formats.coco_conversion import convert

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'


def fill_disk_midway(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on every file opened for writing by ``os.fdopen`` (how both atomic writers open
    their temporary file) takes half of the bytes it is given, then fails with ENOSPC. Returns the
    list of byte counts written before each failure."""
    written: list[int] = []
    real_fdopen = os.fdopen

    class HalfFullDisk(io.FileIO):
        def write(self, data) -> int:
            written.append(super().write(bytes(data)[:max(len(data) // 2, 1)]))
            raise OSError(errno.ENOSPC, 'No space left on device')

    def fdopen(fd: int, mode: str = 'r', *args, **kwargs):
        return HalfFullDisk(fd, 'wb') if 'w' in mode else real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, 'fdopen', fdopen)
    return written


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_configs_install_the_atomic_checkpoint_backend(tmp_path: Path) -> None:
    cfg = Config.fromfile(TINY)
    assert 'cellseg.engine' in cfg.custom_imports.imports  # which imports atomic_checkpoints
    import_modules_from_strings(cfg.custom_imports.imports)
    # the backend mmengine 0.10.7's save_checkpoint(checkpoint, filename) writes a local path with
    assert isinstance(get_file_backend(str(tmp_path / 'epoch_1.pth')), AtomicLocalBackend)


def test_failed_checkpoint_save_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / 'epoch_3.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(1000)}}, str(path))
    before = path.read_bytes()
    written = fill_disk_midway(monkeypatch)
    with pytest.raises(OSError, match='No space left'):
        save_checkpoint({'state_dict': {'w': torch.zeros(1000)}}, str(path))
    assert written and written[0] > 0  # it really failed midway through the bytes
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['w'], torch.ones(1000))
    assert files(tmp_path) == ['epoch_3.pth']  # no temporary file left behind


def test_failed_first_checkpoint_save_leaves_no_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    written = fill_disk_midway(monkeypatch)
    with pytest.raises(OSError, match='No space left'):
        save_checkpoint({'state_dict': {'w': torch.ones(1000)}}, str(tmp_path / 'epoch_1.pth'))
    assert written and files(tmp_path) == []


def test_failed_annotation_write_keeps_the_previous_file(tiny_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / 'annotations'
    out.mkdir()
    previous = out / 'train_all.json'
    previous.write_bytes(b'{"previous": true}')
    written = fill_disk_midway(monkeypatch)
    with pytest.raises(OSError, match='No space left'):
        convert(tiny_root, out, folds=2)
    assert written and written[0] > 0
    assert previous.read_bytes() == b'{"previous": true}'
    assert files(out) == ['train_all.json']
    monkeypatch.undo()  # with a working disk the same call replaces it
    convert(tiny_root, out, folds=2)
    assert previous.read_bytes() != b'{"previous": true}'


def test_atomic_write_leaves_the_umask_alone(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the umask, even for a moment, changes the mode of files other threads create
    then (to world-writable with a umask of 0): atomic writes read it once, at import."""
    from cellseg.utils.fileio import atomic_write_bytes, atomic_write_json

    mask = os.umask(0o077)  # the test's own read, before any write (it starts no thread)
    os.umask(mask)
    calls: list[int] = []
    real_umask = os.umask

    def recording_umask(new: int) -> int:
        calls.append(new)
        return real_umask(new)

    monkeypatch.setattr(os, 'umask', recording_umask)
    atomic_write_bytes(tmp_path / 'a.bin', b'abc')
    atomic_write_json(tmp_path / 'b.json', {'a': 1})
    assert calls == []
    for name in ('a.bin', 'b.json'):  # the mode a plain open() gives
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
