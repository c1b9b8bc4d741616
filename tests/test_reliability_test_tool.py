"""``tools/test.py`` ends a bad input with one line ``error: <file>: <problem>`` and status 1,
no traceback, before the model runs (issue 26): a bad id map or test file, an id map leading
out of ``test_release/``, an output folder that cannot be written, a checkpoint that is broken
or names no classes. A submission run writes its log beside the submission, not into
``./work_dirs`` of wherever it runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from tool_runner import run_tool

from cellseg.apis.data_paths import set_data_paths
from cellseg.apis.evaluate import resolve_test_classes
from cellseg.apis.test_loop import use_test_ground_truth
from cellseg.engine.checkpoint_loader import CheckpointError
from cellseg.formats import hw3
from cellseg.formats.submission import SUBMISSION_JSON

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
ENV = {'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def checkpoint(tiny_root: Path, tiny_ann: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    work = tmp_path_factory.mktemp('reliability_train')
    run_tool('tools/train.py', TINY, '--data-root', tiny_root, '--ann-dir', tiny_ann,
             '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=1', 'val_cfg=None',
             'val_dataloader=None', 'val_evaluator=None',
             'default_hooks.checkpoint.save_best=None', env=ENV)
    return work / 'epoch_1.pth'


def copy_test_set(tiny_root: Path, dest: Path) -> Path:
    """A data root holding the test set alone: test_release/ and the id map."""
    shutil.copytree(tiny_root / hw3.TEST_DIR, dest / hw3.TEST_DIR)
    shutil.copy(tiny_root / hw3.TEST_ID_MAP, dest / hw3.TEST_ID_MAP)
    return dest


def submit(checkpoint: Path, root: Path, out: Path, *extra: object,
           cwd: Path = REPO) -> subprocess.CompletedProcess:
    return run_tool('tools/test.py', TINY, checkpoint, '--data-root', root, '--submit', out,
                    *extra, ok=False, env=ENV, cwd=cwd, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, culprit: Path | str,
                          problem: str) -> None:
    """Status 1, no traceback, and the last line of stderr is ``error: <culprit>: ...problem``
    (the only ``error:`` line)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert 'Traceback' not in out, out
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {culprit}: '), proc.stderr
    assert problem in last, proc.stderr
    assert proc.stderr.count('error: ') == 1, proc.stderr


# ---- the id map and its files: checked before the checkpoint is even read ---------------------

def _break_map(root: Path, kind: str) -> tuple[Path, str]:
    """Damage the test set as ``kind`` says; return the file the message must name and what
    it must say."""
    map_path = root / hw3.TEST_ID_MAP
    entries = json.loads(map_path.read_text())
    first = entries[0]
    if kind == 'missing file':
        (root / hw3.TEST_DIR / first['file_name']).unlink()
        return root / hw3.TEST_DIR / first['file_name'], f'listed in {map_path} (id '
    if kind == 'wrong height':
        entries[0] = dict(first, height=first['height'] + 1)
        map_path.write_text(json.dumps(entries))
        return root / hw3.TEST_DIR / first['file_name'], f'differs from {map_path}'
    if kind == 'non-JSON':
        map_path.write_text('[{"file_name": ')
        return map_path, 'not valid JSON'
    if kind == 'empty list':
        entries, problem = [], 'the list is empty'
    elif kind == 'duplicate id':
        entries.append(dict(first, file_name='another.tif'))
        problem = f"entry {len(entries) - 1}: duplicate id {first['id']} (also entry 0)"
    elif kind == 'id as a string':
        entries[0] = dict(first, id=str(first['id']))
        problem = f"entry 0: id must be an int, got '{first['id']}'"
    elif kind == 'outside the data root':
        secret = root.parent / 'outside' / 'secret.tif'
        secret.parent.mkdir()
        shutil.copy(root / hw3.TEST_DIR / first['file_name'], secret)  # a readable image
        entries[0] = dict(first, file_name='../../outside/secret.tif')
        problem = ("entry 0: file_name '../../outside/secret.tif' leaves test_release/ ('..'); "
                   'it must name a file inside it')
    else:  # an absolute path to a readable image of the right size
        entries[0] = dict(first, file_name=str(root / hw3.TEST_DIR / first['file_name']))
        problem = 'entry 0: file_name '
    map_path.write_text(json.dumps(entries))
    if kind == 'absolute file_name':
        problem += f"{entries[0]['file_name']!r} is an absolute path; it must be relative to " \
                   'test_release/'
    return map_path, problem


@pytest.mark.parametrize('kind', ['missing file', 'duplicate id', 'wrong height', 'empty list',
                                  'non-JSON', 'id as a string', 'outside the data root',
                                  'absolute file_name'])
def test_bad_id_map_is_one_line_before_anything_loads(tiny_root: Path, tmp_path: Path,
                                                      kind: str) -> None:
    root = copy_test_set(tiny_root, tmp_path / 'data')
    culprit, problem = _break_map(root, kind)
    out = tmp_path / 'sub' / 'submission.zip'
    # a checkpoint that does not exist: the map's error comes first, so nothing was loaded
    proc = submit(tmp_path / 'no-such.pth', root, out)
    assert_one_line_error(proc, culprit, problem)
    assert not out.parent.exists()


def test_bad_id_map_with_a_real_checkpoint(checkpoint: Path, tiny_root: Path,
                                           tmp_path: Path) -> None:
    root = copy_test_set(tiny_root, tmp_path / 'data')
    culprit, problem = _break_map(root, 'duplicate id')
    proc = submit(checkpoint, root, tmp_path / 'sub')
    assert_one_line_error(proc, culprit, problem)
    assert 'classes from' not in proc.stdout  # stopped before the checkpoint was read
    assert not (tmp_path / 'sub').exists()


def test_unwritable_submission_folder_is_refused_before_the_model(checkpoint: Path,
                                                                  tiny_root: Path,
                                                                  tmp_path: Path) -> None:
    root = copy_test_set(tiny_root, tmp_path / 'data')
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    proc = submit(checkpoint, root, blocker / 'sub' / 'submission.zip')
    assert_one_line_error(proc, blocker, 'not a folder')
    assert 'classes from' not in proc.stdout


# ---- the checkpoint ------------------------------------------------------------------------------

def test_truncated_checkpoint_is_one_line(checkpoint: Path, tiny_root: Path,
                                          tmp_path: Path) -> None:
    root = copy_test_set(tiny_root, tmp_path / 'data')
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    proc = submit(cut, root, tmp_path / 'sub')
    assert_one_line_error(proc, cut, 'not a readable checkpoint')
    assert not (tmp_path / 'sub').exists()


def without_classes(checkpoint: Path, dest: Path) -> Path:
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    del ckpt['meta']['dataset_meta']
    torch.save(ckpt, dest)
    return dest


def test_checkpoint_without_classes_and_no_data_classes_is_one_line(
        checkpoint: Path, tiny_root: Path, tmp_path: Path) -> None:
    """The test set alone gives no classes: a checkpoint that does not name its own is refused
    naming it, before the model is built."""
    root = copy_test_set(tiny_root, tmp_path / 'data')
    bare = without_classes(checkpoint, tmp_path / 'bare.pth')
    proc = submit(bare, root, tmp_path / 'sub')
    assert_one_line_error(proc, bare, 'holds no class names (meta.dataset_meta.classes')


def _tiny_config(root: Path, ann: Path | None = None) -> Config:
    cfg = Config.fromfile(TINY)
    set_data_paths(cfg, str(root), str(ann) if ann else None)
    return cfg


def test_checkpoint_without_classes_takes_the_data_s_if_its_layers_match(
        checkpoint: Path, tiny_root: Path, tiny_ann: Path, tmp_path: Path) -> None:
    bare = without_classes(checkpoint, tmp_path / 'bare.pth')
    cfg = _tiny_config(tiny_root, tiny_ann)
    line = resolve_test_classes(cfg, str(bare))
    assert 'the checkpoint names no classes; its class layers have as many' in line
    # data of 3 classes: the checkpoint's 4-class layers do not fit it
    ann = tmp_path / 'ann'
    ann.mkdir()
    for f in tiny_ann.iterdir():
        coco = json.loads(f.read_text())
        coco['categories'] = coco['categories'][:3]
        coco['annotations'] = [a for a in coco['annotations'] if a['category_id'] <= 3]
        (ann / f.name).write_text(json.dumps(coco))
    with pytest.raises(CheckpointError) as err:
        resolve_test_classes(_tiny_config(tiny_root, ann), str(bare))
    assert str(err.value).startswith(f'{bare}: holds no class names')
    assert 'its class layers have 4 classes, not the 3 of the data' in str(err.value)


def test_test_ground_truth_outside_the_data_root_is_refused(tiny_root: Path,
                                                            tmp_path: Path) -> None:
    gt = json.loads((tiny_root / 'test_gt.json').read_text())
    gt['images'][1]['file_name'] = '../outside.tif'
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError) as err:
        use_test_ground_truth(_tiny_config(tiny_root), str(path))
    assert str(err.value).startswith(
        f"{path}: image {gt['images'][1]['id']}: file_name '../outside.tif' leaves ")


# ---- where a submission run writes -----------------------------------------------------------

def test_submission_logs_go_beside_the_submission_not_into_the_cwd(
        checkpoint: Path, tiny_root: Path, tmp_path: Path) -> None:
    root = copy_test_set(tiny_root, tmp_path / 'data')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    out = tmp_path / 'sub' / 'submission.zip'
    proc = submit(checkpoint, root, out, '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0',
                  cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(elsewhere.iterdir()) == []  # no work_dirs/ where it ran
    with zipfile.ZipFile(out) as z:
        assert z.namelist() == [SUBMISSION_JSON]
    logs = list((tmp_path / 'sub').glob('*/*.log'))
    assert len(logs) == 1 and logs[0].stat().st_size > 0
