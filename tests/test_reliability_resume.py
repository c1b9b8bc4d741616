"""``tools/train.py --resume`` never restarts a work dir with checkpoints from scratch and never
resumes from another folder (issue 26): the latest checkpoint missing or truncated resumes from
the newest readable one, saying so; none readable is refused naming them; a copied work dir
resumes from its own files. ``cellseg.apis.train.resolve_resume`` in-process on small
checkpoints, then through the command line on the tiny model."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from tool_runner import run_tool

from cellseg.apis import train as train_api
from cellseg.apis.train import resolve_resume
from cellseg.engine.checkpoint_loader import CheckpointError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
          'default_hooks.checkpoint.save_best=None']


# ---- resolve_resume ------------------------------------------------------------------------------

def work_dir_with(path: Path, epochs: int = 3) -> Path:
    """A work dir as CheckpointHook leaves it: epoch_1..N.pth and last_checkpoint naming N."""
    path.mkdir(parents=True, exist_ok=True)
    for k in range(1, epochs + 1):
        torch.save({'meta': {'epoch': k}, 'state_dict': {'w': torch.full((4,), float(k))}},
                   path / f'epoch_{k}.pth')
    (path / 'last_checkpoint').write_text(str(path / f'epoch_{epochs}.pth'))
    return path


def resume_cfg(work_dir: Path, load_from: str | None = None) -> Config:
    return Config(dict(work_dir=str(work_dir), resume=True, load_from=load_from))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_the_checkpoint_last_checkpoint_names(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    work = work_dir_with(tmp_path / 'w')
    cfg = resume_cfg(work)
    read = []
    monkeypatch.setattr(train_api, 'read_checkpoint', read.append)
    # mmengine's own auto-resume takes it from there, logging 'Auto resumed from ...'
    assert resolve_resume(cfg) is None and cfg.load_from is None
    assert read == [work / 'epoch_3.pth']  # checked readable all the same


@pytest.mark.parametrize('damage, why', [(Path.unlink, 'missing'),
                                         (truncate, 'unreadable (not a readable checkpoint')])
def test_latest_missing_or_truncated_resumes_from_the_newest_readable(
        tmp_path: Path, damage, why: str) -> None:
    work = work_dir_with(tmp_path / 'w')
    damage(work / 'epoch_3.pth')
    cfg = resume_cfg(work)
    line, warning = resolve_resume(cfg)
    assert warning and cfg.load_from == str(work / 'epoch_2.pth')
    assert line.startswith(f'{work / "epoch_3.pth"}: {why}')
    assert line.endswith(f'resuming from {work / "epoch_2.pth"}, the newest readable '
                         'checkpoint of the work dir')


def test_several_broken_are_all_named(tmp_path: Path) -> None:
    work = work_dir_with(tmp_path / 'w')
    (work / 'epoch_3.pth').unlink()
    truncate(work / 'epoch_2.pth')
    cfg = resume_cfg(work)
    line, warning = resolve_resume(cfg)
    assert warning and cfg.load_from == str(work / 'epoch_1.pth')
    assert f'{work / "epoch_3.pth"}: missing; {work / "epoch_2.pth"}: unreadable' in line


def test_no_last_checkpoint_but_checkpoints_resumes_from_the_newest(tmp_path: Path) -> None:
    work = work_dir_with(tmp_path / 'w', epochs=12)  # by number: 12 after 2, not after 1
    (work / 'last_checkpoint').unlink()
    cfg = resume_cfg(work)
    assert resolve_resume(cfg) == (f'resuming from {work / "epoch_12.pth"}', False)
    assert cfg.load_from == str(work / 'epoch_12.pth')


def test_a_copied_work_dir_resumes_from_its_own_file(tmp_path: Path) -> None:
    original = work_dir_with(tmp_path / 'original')
    copy = tmp_path / 'copy'
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    cfg = resume_cfg(copy)
    line, warning = resolve_resume(cfg)
    assert warning and cfg.load_from == str(copy / 'epoch_3.pth')
    assert line == (f'{copy / "last_checkpoint"} names {original / "epoch_3.pth"}, outside this '
                    'work dir (a copied work dir?): its own epoch_3.pth is used')


def test_none_readable_is_refused_naming_them(tmp_path: Path) -> None:
    work = work_dir_with(tmp_path / 'w', epochs=2)
    (work / 'epoch_2.pth').unlink()
    truncate(work / 'epoch_1.pth')
    with pytest.raises(CheckpointError) as err:
        resolve_resume(resume_cfg(work))
    message = str(err.value)
    assert message.startswith(f'{work / "epoch_2.pth"}: --resume found no readable checkpoint '
                              f'in {work} ({work / "epoch_2.pth"}: missing; '
                              f'{work / "epoch_1.pth"}: unreadable')
    assert 'another --work-dir to start from the beginning' in message


def test_an_empty_work_dir_starts_from_the_beginning(tmp_path: Path) -> None:
    cfg = resume_cfg(tmp_path / 'new')
    assert resolve_resume(cfg) is None and cfg.load_from is None


def test_a_given_checkpoint_is_left_alone(tmp_path: Path) -> None:
    work = work_dir_with(tmp_path / 'w')
    cfg = resume_cfg(work, str(work / 'epoch_1.pth'))
    assert resolve_resume(cfg) is None and cfg.load_from == str(work / 'epoch_1.pth')


# ---- through tools/train.py ----------------------------------------------------------------------

def iters_per_epoch(tiny_ann: Path) -> int:
    n = len(json.loads((tiny_ann / 'train_all.json').read_text())['images'])
    return -(-n // 2)  # batch 2


def train(tiny_root: Path, tiny_ann: Path, work: Path, epochs: int, *extra: str,
          ok: bool = True) -> subprocess.CompletedProcess:
    return run_tool('tools/train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann,
                    '--work-dir', work, *extra, '--cfg-options', f'train_cfg.max_epochs={epochs}',
                    f'param_scheduler.0.T_max={epochs}', f'param_scheduler.0.end={epochs}',
                    'randomness.seed=0', *NO_VAL, ok=ok, env={'OMP_NUM_THREADS': '1'},
                    timeout=600)


@pytest.fixture(scope='module')
def two_epochs(tiny_root: Path, tiny_ann: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    work = tmp_path_factory.mktemp('two_epochs')
    train(tiny_root, tiny_ann, work, 2)
    assert (work / 'epoch_1.pth').is_file() and (work / 'epoch_2.pth').is_file()
    return work


def last_run_steps(work: Path) -> list[int]:
    """The iterations the newest run of ``work`` trained (its timestamped folder sorts last)."""
    newest = sorted(work.glob('*/vis_data/scalars.json'))[-1]
    rows = [json.loads(line) for line in newest.read_text().splitlines() if line.strip()]
    return [r['step'] for r in rows if 'loss' in r]


def test_resume_after_the_latest_was_deleted_continues_from_the_older(
        two_epochs: Path, tiny_root: Path, tiny_ann: Path, tmp_path: Path) -> None:
    work = tmp_path / 'work'
    shutil.copytree(two_epochs, work)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    (work / 'epoch_2.pth').unlink()
    proc = train(tiny_root, tiny_ann, work, 2, '--resume')
    out = proc.stdout + proc.stderr
    assert (f'{work / "epoch_2.pth"}: missing; resuming from {work / "epoch_1.pth"}, the newest '
            'readable checkpoint') in out
    per_epoch = iters_per_epoch(tiny_ann)
    # epoch 2 again, from the iteration after epoch 1, not from iteration 1
    assert last_run_steps(work) == list(range(per_epoch + 1, 2 * per_epoch + 1))
    final = torch.load(work / 'epoch_2.pth', map_location='cpu', weights_only=False)
    assert final['meta']['epoch'] == 2 and final['meta']['iter'] == 2 * per_epoch


def test_a_copied_work_dir_resumes_from_the_copy(two_epochs: Path, tiny_root: Path,
                                                 tiny_ann: Path, tmp_path: Path) -> None:
    """``last_checkpoint`` of the copy names the original's file; the original is gone."""
    original = tmp_path / 'original'
    shutil.copytree(two_epochs, original)
    (original / 'last_checkpoint').write_text(str(original / 'epoch_2.pth'))
    copy = tmp_path / 'copy'
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    proc = train(tiny_root, tiny_ann, copy, 3, '--resume')
    out = proc.stdout + proc.stderr
    assert 'its own epoch_2.pth is used' in out
    per_epoch = iters_per_epoch(tiny_ann)
    assert last_run_steps(copy) == list(range(2 * per_epoch + 1, 3 * per_epoch + 1))
    assert not original.exists()


def test_no_readable_checkpoint_is_refused_in_one_line(two_epochs: Path, tiny_root: Path,
                                                       tiny_ann: Path, tmp_path: Path) -> None:
    work = tmp_path / 'work'
    shutil.copytree(two_epochs, work)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    truncate(work / 'epoch_2.pth')
    (work / 'epoch_1.pth').unlink()
    runs = set(work.glob('*/vis_data'))
    proc = train(tiny_root, tiny_ann, work, 3, '--resume', ok=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {work / "epoch_2.pth"}: --resume found no readable '
                           'checkpoint'), proc.stderr
    assert set(work.glob('*/vis_data')) == runs  # no training started
