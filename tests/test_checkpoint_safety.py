"""Checkpoints are read with ``torch.load(weights_only=True)``: one whose unpickling would run
code is refused by every tool that loads one, before the code runs (the marker file it would
write never appears), while this project's own checkpoints (optimizer, message hub, RNG states)
still load, and ``CELLSEG_TRUST_CHECKPOINTS=1`` is the explicit way to load an old one anyway."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tool_runner import run_tool

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'


class Payload:
    """Pickles as a call of ``exec``: unpickling it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({str(self.marker)!r}, "w").write("ran")',)


@pytest.fixture()
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint with everything a tool looks for (meta with classes, a state dict) and a
    payload; returns it and the marker its payload would write."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': {'dataset_meta': {'classes': ('class1', 'class2', 'class3', 'class4')},
                         'note': Payload(marker)},
                'state_dict': {}}, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture(scope='module')
def own_checkpoint(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


def refused(done, path: Path, marker: Path) -> None:
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert 'Traceback' not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {path}: refused: loading it would call exec,'), last
    assert 'CELLSEG_TRUST_CHECKPOINTS=1' in last
    assert not marker.exists()


def test_predict_refuses_it(malicious, tiny_root: Path, tmp_path: Path) -> None:
    path, marker = malicious
    image = next((tiny_root / 'test_release').glob('*.tif'))
    refused(run_tool('tools/predict.py', TINY, path, image, '--out-dir', tmp_path / 'out',
                     ok=False), path, marker)


def test_test_refuses_it(malicious, tiny_root: Path, tiny_ann: Path, tmp_path: Path) -> None:
    path, marker = malicious
    refused(run_tool('tools/test.py', TINY, path, '--data-root', tiny_root, '--ann-dir', tiny_ann,
                     '--work-dir', tmp_path / 'work', ok=False), path, marker)


@pytest.mark.parametrize('how', [['--resume'], ['--pretrained'], ['--cfg-options', 'load_from=']])
def test_train_refuses_it_to_resume_or_start_from(how: list[str], malicious, tiny_root: Path,
                                                  tiny_ann: Path, tmp_path: Path) -> None:
    path, marker = malicious
    option = [*how[:-1], how[-1] + str(path)] if how[-1].endswith('=') else [*how, path]
    done = run_tool('tools/train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann,
                    '--work-dir', tmp_path / 'work', *option, ok=False)
    refused(done, path, marker)
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_own_checkpoints_load_whole(own_checkpoint: Path) -> None:
    from cellseg.engine.checkpoint_loader import load_local_checkpoint

    checkpoint = load_local_checkpoint(str(own_checkpoint), 'cpu')
    assert {'meta', 'state_dict', 'optimizer', 'message_hub', 'param_schedulers',
            'rng_states'} <= set(checkpoint)
    assert checkpoint['message_hub']['log_scalars']['train/loss'].current() > 0
    assert checkpoint['meta']['dataset_meta']['classes'][0] == 'class1'


def test_resuming_an_own_checkpoint_works(own_checkpoint: Path, tiny_root: Path,
                                          tiny_ann: Path, tmp_path: Path) -> None:
    work = tmp_path / 'work'  # a copy: the shared checkpoint's folder stays as it is
    work.mkdir()
    copy = work / own_checkpoint.name
    copy.write_bytes(own_checkpoint.read_bytes())
    done = run_tool('tools/train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann,
                    '--work-dir', work, '--resume', copy,
                    '--cfg-options', 'train_cfg.max_epochs=2')
    assert 'Traceback' not in done.stdout + done.stderr
    assert (work / 'epoch_2.pth').is_file()


def test_the_opt_in_loads_it(malicious, monkeypatch: pytest.MonkeyPatch) -> None:
    from cellseg.engine.checkpoint_loader import load_local_checkpoint

    path, marker = malicious
    monkeypatch.setenv('CELLSEG_TRUST_CHECKPOINTS', '1')
    load_local_checkpoint(str(path), 'cpu')
    assert marker.read_text() == 'ran'


def test_a_truncated_checkpoint_is_named(own_checkpoint: Path, tmp_path: Path) -> None:
    from cellseg.engine.checkpoint_loader import CheckpointError, load_local_checkpoint

    cut = tmp_path / 'cut.pth'
    cut.write_bytes(own_checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=f'{cut}: not a readable checkpoint'):
        load_local_checkpoint(str(cut), 'cpu')


def test_a_tool_reads_a_checkpoint_once(own_checkpoint: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The classes read before the model is built, then the weights: one torch.load."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from cellseg.apis.classes import checkpoint_classes
    from cellseg.engine import checkpoint_loader

    calls = []
    real = torch.load
    monkeypatch.setattr(checkpoint_loader.torch, 'load',
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert checkpoint_classes(own_checkpoint)[0] == 'class1'
    CheckpointLoader.load_checkpoint(str(own_checkpoint), 'cpu')
    assert calls == [str(own_checkpoint)]
