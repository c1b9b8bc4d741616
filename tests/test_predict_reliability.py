"""tools/predict.py from a checkpoint alone, and nothing lost: a bad image is reported while the
others are predicted, a killed run keeps every finished image's rows and its rerun does only the
rest, ending with an uninterrupted run's instances.csv; another run's outputs are never mixed in."""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from tool_runner import kill_when, run_tool, start_tool

from cellseg.engine.checkpoint_loader import load_local_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
ROWS = Path('.cellseg_predict') / 'rows'


@pytest.fixture(scope='module')
def checkpoint(tiny_checkpoint: Path) -> Path:
    """A trained tiny model: its checkpoint holds its config (meta.cfg) and classes."""
    return tiny_checkpoint


@pytest.fixture(scope='module')
def nine_images(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set's 9 images (train and test) in one folder, named img0..img8."""
    folder = tmp_path_factory.mktemp('nine')
    sources = sorted(tiny_root.glob('train/*/image.tif')) + sorted(
        (tiny_root / 'test_release').glob('*.tif'))
    sources = (sources * 2)[:9]
    for i, src in enumerate(sources):
        shutil.copy(src, folder / f'img{i}.tif')
    return folder


def predict(checkpoint: Path, *args: object, ok: bool = True):
    return run_tool('tools/predict.py', checkpoint, *args, '--score-thr', '0.05', '--device',
                    'cpu', ok=ok, env={'OMP_NUM_THREADS': '1'})


@pytest.fixture(scope='module')
def uninterrupted(checkpoint: Path, nine_images: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Path:
    out = tmp_path_factory.mktemp('uninterrupted')
    done = predict(checkpoint, nine_images, '--out-dir', out)
    assert '9 images predicted' in done.stdout
    return out


def test_predict_takes_the_config_from_the_checkpoint(checkpoint: Path, nine_images: Path,
                                                      uninterrupted: Path, tmp_path: Path) -> None:
    rows = (uninterrupted / 'instances.csv').read_text().splitlines()
    assert len(rows) > 9, 'the model should find instances'
    # the same outputs as with the config named explicitly, in the older argument order
    run_tool('tools/predict.py', TINY, checkpoint, nine_images, '--out-dir', tmp_path,
             '--score-thr', '0.05', '--device', 'cpu')
    assert (tmp_path / 'instances.csv').read_bytes() == \
        (uninterrupted / 'instances.csv').read_bytes()
    for name in ('img0_labels.tif', 'img8_classes.tif'):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / name),
                                      tifffile.imread(uninterrupted / name))


def test_a_saved_config_that_is_code_is_refused(checkpoint: Path, nine_images: Path,
                                                tmp_path: Path) -> None:
    marker = tmp_path / 'ran'
    saved = load_local_checkpoint(str(checkpoint), 'cpu')
    saved['meta']['cfg'] += f'\nx = __import__("os").system("touch {marker}")\n'
    evil = tmp_path / 'evil_cfg.pth'
    torch.save(saved, evil)
    done = predict(evil, nine_images, '--out-dir', tmp_path / 'out', ok=False)
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {evil}: its saved config is not plain data'), last
    assert not marker.exists()


def test_a_bad_image_is_reported_and_the_others_are_predicted(checkpoint: Path,
                                                              nine_images: Path,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / 'mixed'
    folder.mkdir()
    for name in ('img0.tif', 'img1.tif', 'img2.tif'):
        shutil.copy(nine_images / name, folder / name)
    tifffile.imwrite(folder / 'a_two_channels.tif', np.zeros((2, 40, 40), np.uint8),
                     photometric='minisblack', planarconfig='separate')
    tifffile.imwrite(folder / 'b_zstack.tif', np.zeros((5, 40, 40, 3), np.uint8))
    cut = (nine_images / 'img3.tif').read_bytes()
    (folder / 'c_truncated.tif').write_bytes(cut[:len(cut) // 2])
    out = tmp_path / 'out'
    done = predict(checkpoint, folder, '--out-dir', out, ok=False)
    assert done.returncode == 1 and 'Traceback' not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        f'error: 3 of 6 images failed, listed in {out / "failed.csv"}'
    with open(out / 'failed.csv', newline='') as f:
        failed = {r['image']: r['error'] for r in csv.DictReader(f)}
    assert set(failed) == {str(folder / bad) for bad in ('a_two_channels.tif', 'b_zstack.tif',
                                                         'c_truncated.tif')}
    for image, error in failed.items():
        assert error.startswith(f'{image}: '), error
    # the good images are all there, rows and files
    images = {r.split(',')[0] for r in (out / 'instances.csv').read_text().splitlines()[1:]}
    assert images == {'img0', 'img1', 'img2'}
    assert {p.name for p in out.glob('*_labels.tif')} == {f'img{i}_labels.tif' for i in range(3)}


def test_a_killed_run_loses_nothing_and_its_rerun_does_only_the_rest(
        checkpoint: Path, nine_images: Path, uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out'
    log = tmp_path / 'first.log'
    proc = start_tool('tools/predict.py', checkpoint, nine_images, '--out-dir', out,
                      '--score-thr', '0.05', '--device', 'cpu', output=log,
                      env={'OMP_NUM_THREADS': '1'})
    kill_when(proc, lambda: len(list((out / ROWS).glob('*.csv'))) >= 3, log)
    finished = sorted((out / ROWS).glob('*.csv'))
    assert proc.returncode == -signal.SIGKILL and 3 <= len(finished) < 9, log.read_text()
    # every finished image's rows are in instances.csv already
    csv_text = (out / 'instances.csv').read_text()
    for rows in finished:
        assert rows.read_text() in csv_text, rows.name

    done = predict(checkpoint, nine_images, '--out-dir', out)
    assert f'{9 - len(finished)} images predicted, {len(finished)} done earlier' in done.stdout
    assert (out / 'instances.csv').read_bytes() == \
        (uninterrupted / 'instances.csv').read_bytes()
    assert not (out / 'failed.csv').exists()


def test_another_run_s_outputs_are_refused_unless_overwritten(checkpoint: Path, nine_images: Path,
                                                               uninterrupted: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / 'out'
    shutil.copytree(uninterrupted, out)
    done = run_tool('tools/predict.py', checkpoint, nine_images / 'img0.tif', '--out-dir', out,
                    '--score-thr', '0.5', ok=False)
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        f'error: {out}: holds the outputs of another prediction (')
    assert 'pass --overwrite to replace them' in done.stderr
    # an older output folder, without the record of its run, is another run too
    os.remove(out / '.cellseg_predict' / 'run.json')
    assert run_tool('tools/predict.py', checkpoint, nine_images / 'img0.tif', '--out-dir', out,
                    '--score-thr', '0.05', ok=False).returncode == 1
    run_tool('tools/predict.py', checkpoint, nine_images / 'img0.tif', '--out-dir', out,
             '--score-thr', '0.5', '--overwrite')
    assert {p.name for p in out.glob('*_labels.tif')} == {'img0_labels.tif'}
    assert {r.split(',')[0] for r in (out / 'instances.csv').read_text().splitlines()[1:]} <= \
        {'img0'}


@pytest.mark.parametrize('problem', ['unwritable', 'no classes', 'corrupt'])
def test_what_can_be_checked_first_is_one_line(problem: str, checkpoint: Path, nine_images: Path,
                                               tmp_path: Path) -> None:
    out, ckpt = tmp_path / 'out', checkpoint
    if problem == 'unwritable':
        out = Path('/proc/cellseg-predict-out')  # not writable, even for root
    elif problem == 'no classes':
        saved = load_local_checkpoint(str(checkpoint), 'cpu')
        del saved['meta']['dataset_meta']
        ckpt = tmp_path / 'no_classes.pth'
        torch.save(saved, ckpt)
    else:
        ckpt = tmp_path / 'corrupt.pth'
        ckpt.write_bytes(checkpoint.read_bytes()[:5000])
    done = run_tool('tools/predict.py', ckpt, nine_images, '--out-dir', out, ok=False)
    assert done.returncode == 1 and 'Traceback' not in done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    named = out if problem == 'unwritable' else ckpt
    assert line.startswith(f'error: {named}'), line
    assert not list(Path(out).glob('*_labels.tif')) if Path(out).exists() else True


def test_names_that_are_formulas_are_text_in_the_csvs(checkpoint: Path, nine_images: Path,
                                                      tmp_path: Path) -> None:
    """A class name from classes.txt and an image name that a spreadsheet would run."""
    from cellseg.utils.spreadsheet import FORMULA_STARTS

    saved = load_local_checkpoint(str(checkpoint), 'cpu')
    classes = list(saved['meta']['dataset_meta']['classes'])
    classes[:] = ["=cmd|' /C calc'!A0"] * len(classes)
    saved['meta']['dataset_meta']['classes'] = tuple(f'{c}{i}' for i, c in enumerate(classes))
    ckpt = tmp_path / 'formula_classes.pth'
    torch.save(saved, ckpt)
    images = tmp_path / 'images'
    images.mkdir()
    shutil.copy(nine_images / 'img0.tif', images / '=1+1.tif')
    (images / '@bad.tif').write_bytes(b'not a tiff')
    out = tmp_path / 'out'
    predict(ckpt, images, '--out-dir', out, ok=False)
    with open(out / 'instances.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows and {r['image'] for r in rows} == {"'=1+1"}
    assert {r['class_name'][:2] for r in rows} == {"'="}
    with open(out / 'failed.csv', newline='') as f:
        (failed,) = list(csv.DictReader(f))
    for path in (out / 'instances.csv', out / 'failed.csv'):
        with open(path, newline='') as f:
            cells = [c for row in csv.reader(f) for c in row]
        assert not [c for c in cells if c.startswith(FORMULA_STARTS)
                    and not _is_number(c)], path


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_prediction_reads_images_with_the_percentiles_training_used(checkpoint: Path,
                                                                    tmp_path: Path) -> None:
    """The reading rule travels in the checkpoint's config: a model trained with other
    percentiles predicts a 16-bit image with an outlier pixel as its training pipeline read it."""
    from mmdet.registry import TRANSFORMS

    from cellseg.apis.predict import load_model, predict_image, reading_percentiles
    from cellseg.formats.images import read_image

    saved = load_local_checkpoint(str(checkpoint), 'cpu')
    saved['meta']['cfg'], n = re.subn(r'1\.0,\s*99\.8,', '5.0, 95.0,', saved['meta']['cfg'])
    assert n >= 3  # the variable and the pipelines
    ckpt = tmp_path / 'percentiles.pth'
    torch.save(saved, ckpt)
    image16 = np.random.default_rng(3).integers(200, 900, (70, 80)).astype(np.uint16)
    image16[5, 5] = 65535
    path = tmp_path / 'hot16.tif'
    tifffile.imwrite(path, image16)

    model = load_model(ckpt, device='cpu', score_thr=0.5)
    assert reading_percentiles(model) == (5.0, 95.0)
    (step,) = [t for t in model.cfg.train_dataloader.dataset.pipeline
               if t['type'] == 'LoadCellImageFromFile']
    trained_on = TRANSFORMS.build(step).transform(dict(img_path=str(path)))['img']
    predicted_on = predict_image(model, path, 0.5)[0]
    assert np.array_equal(predicted_on, trained_on[..., ::-1])
    assert np.array_equal(predicted_on, read_image(path, percentiles=(5.0, 95.0)))
    assert not np.array_equal(predicted_on, read_image(path))  # the percentiles matter here


def test_the_output_threshold_in_the_box_head_changes_no_output(checkpoint: Path,
                                                                nine_images: Path,
                                                                tmp_path: Path) -> None:
    """Dropping detections below the output threshold before the mask head (load_model's
    score_thr) writes what predicting at the config's low threshold and filtering afterwards
    wrote: a detection below it cannot change NMS or the top-k of those above it."""
    from cellseg.apis.predict import collect_images, load_model, predict_files

    paths = collect_images([nine_images])
    thr = 0.15
    early = load_model(checkpoint, device='cpu', score_thr=thr)
    assert early.test_cfg.rcnn.score_thr == thr
    late = load_model(checkpoint, device='cpu',
                      cfg_options={'model.test_cfg.rcnn.score_thr': 0.0})
    for model, out in ((early, tmp_path / 'early'), (late, tmp_path / 'late')):
        out.mkdir()
        predict_files(model, paths, out, thr, progress=False)
    rows = (tmp_path / 'early' / 'instances.csv').read_bytes()
    assert rows.count(b'\n') > 10 and rows == (tmp_path / 'late' / 'instances.csv').read_bytes()
    for name in ('img0_labels.tif', 'img4_labels.tif'):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / 'early' / name),
                                      tifffile.imread(tmp_path / 'late' / name))
