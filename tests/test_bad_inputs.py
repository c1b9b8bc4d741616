"""Bad and odd inputs through the real entry points; docs/bad_inputs.md is the table of them.

- Conversion: ``data_prep/hw3_to_coco.py`` as a subprocess. A bad file exits 1 with
  ``error: <path>: <problem>`` on stderr and no traceback; a documented skip exits 0 and logs a
  warning naming the file.
- Training data: the tiny config's train dataset and pipeline (CellDataset, LoadCellImageFromFile,
  LoadAnnotations, RandomCrop, PackDetInputs), and one short ``tools/train.py`` run.
- Test/predict: the dataset and pipeline of ``tools/test.py --submit`` (``test.json``,
  LoadCellImageFromFile).

tests/test_hw3.py checks the converter's errors in-process; here the files go through the
command line and the pipelines.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from tool_runner import run_tool

from cellseg.apis.data_paths import set_data_paths
from cellseg.apis.test_loop import configure_submission_run
from cellseg.formats import hw3
from cellseg.formats.coco_conversion import convert
from cellseg.utils.scalars import read_scalars

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / 'tests' / 'configs' / 'cell_r50_tiny.py'
CONVERT = REPO / 'data_prep' / 'hw3_to_coco.py'
ALPHA_WARNING = 'alpha channel is not uniform; it is ignored'


# ---- helpers ------------------------------------------------------------------------------------

def copy_root(tiny_root: Path, dest: Path) -> Path:
    shutil.copytree(tiny_root, dest, ignore=shutil.ignore_patterns('annotations'))
    return dest


def run_convert(root: Path, out: Path | None = None) -> subprocess.CompletedProcess:
    return run_tool(CONVERT, root, '--out-dir', out or root / 'annotations', '--folds', '0',
                    ok=False, timeout=300)


def assert_cli_error(proc: subprocess.CompletedProcess, culprit: Path, problem: str) -> None:
    """Exit 1, and stderr is one ``error: <culprit>: ...`` message stating ``problem``."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f'error: {culprit}: '), proc.stderr
    assert problem in proc.stderr, proc.stderr


def train_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / 'train').iterdir() if p.is_dir())


def first_class_file(root: Path) -> Path:
    return sorted(train_dirs(root)[0].glob('class*.tif'))[0]


def build_dataset(root: Path, stage: str):
    """The dataset ``tools/train.py`` (stage 'train') or ``tools/test.py --submit`` ('test')
    builds from the tiny config for data root ``root`` (annotations in ``root/annotations``)."""
    cfg = Config.fromfile(TINY)
    import_modules_from_strings(cfg.custom_imports.imports)
    init_default_scope('mmdet')
    set_data_paths(cfg, str(root), str(root / 'annotations'))
    if stage == 'train':
        return DATASETS.build(cfg.train_dataloader.dataset)
    configure_submission_run(cfg, str(root / 'results'))
    return DATASETS.build(cfg.test_dataloader.dataset)


def item_of(dataset, path: Path) -> int:
    return next(i for i in range(len(dataset))
                if Path(dataset.get_data_info(i)['img_path']) == path)


# ---- ways to damage a file ----------------------------------------------------------------------

def zero_bytes(path: Path) -> None:
    path.write_bytes(b'')


def header_cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])  # inside the first IFD (at offset 8)


def pixel_data_cut(path: Path) -> None:
    """Header intact, pixel data cut in half: the size can be read, the pixels cannot."""
    with tifffile.TiffFile(path) as tif:
        start = tif.pages[0].dataoffsets[0]
    data = path.read_bytes()
    path.write_bytes(data[:start + (len(data) - start) // 2])


def png_named_tif(path: Path) -> None:
    path.write_bytes(cv2.imencode('.png', np.zeros((8, 8), np.uint8))[1].tobytes())


def rewrite(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    """A damage that rewrites the TIFF's values with ``change``."""
    def damage(path: Path) -> None:
        tifffile.imwrite(path, change(tifffile.imread(path)))
    damage.__name__ = name
    return damage


def with_nan(labels: np.ndarray) -> np.ndarray:
    bad = labels.astype(np.float64)
    bad[0, 0] = np.nan
    return bad


UNREADABLE = [zero_bytes, header_cut, pixel_data_cut, png_named_tif]


# ---- conversion: errors -------------------------------------------------------------------------

@pytest.mark.parametrize('target, damage, problem', [
    ('image', zero_bytes, 'cannot read as TIFF'),
    ('image', header_cut, 'cannot read as TIFF'),
    ('image', png_named_tif, 'cannot read as TIFF'),
    ('mask', zero_bytes, 'cannot read as TIFF'),
    ('mask', header_cut, 'cannot read as TIFF'),
    ('mask', pixel_data_cut, 'cannot read as TIFF'),
    ('mask', png_named_tif, 'cannot read as TIFF'),
    ('mask', rewrite('shape', lambda m: m[:-3]), 'differs from its image'),
    ('mask', rewrite('fractional', lambda m: np.where(m > 0, m + 0.5, 0.0)),
     'fractional instance ids'),
    ('mask', rewrite('nan', with_nan), 'NaN or infinite'),
    ('mask', rewrite('negative_float', lambda m: np.where(m > 0, -m, 0.0)),
     'negative instance ids'),
    ('mask', rewrite('negative_int', lambda m: -m.astype(np.int32)), 'negative instance ids'),
    # with classes.txt naming the four HW3 classes, a fifth class file is a mistake
    ('class5', rewrite('copy_of_class1', lambda m: m), 'class 5, but'),
    ('class0', rewrite('copy_of_class1', lambda m: m), 'unknown class file'),
    ('test image', zero_bytes, 'cannot read as TIFF'),
    ('test image', png_named_tif, 'cannot read as TIFF'),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_bad_file_stops_conversion_naming_it(tiny_root: Path, tmp_path: Path, target: str,
                                             damage: Callable[[Path], None],
                                             problem: str) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    if target == 'image':
        culprit = train_dirs(root)[0] / hw3.IMAGE_FILE
    elif target == 'mask':
        culprit = first_class_file(root)
    elif target in ('class5', 'class0'):
        culprit = train_dirs(root)[0] / f'{target}.tif'
        shutil.copy(first_class_file(root), culprit)
        (root / hw3.CLASSES_TXT).write_text('a\nb\nc\nd\n')  # four names, class5.tif
    else:
        culprit = sorted((root / hw3.TEST_DIR).iterdir())[0]
    damage(culprit)
    assert_cli_error(run_convert(root), culprit, problem)


def _map_problem(root: Path, kind: str) -> str:
    map_path = root / hw3.TEST_ID_MAP
    entries = json.loads(map_path.read_text())
    first = entries[0]
    if kind == 'listed but missing':
        (root / hw3.TEST_DIR / first['file_name']).unlink()
        return 'but missing'
    if kind == 'duplicate id':
        entries.append(dict(first, file_name='another.tif'))
        problem = f"duplicate id {first['id']}"
    else:
        entries.append(dict(first, id=max(e['id'] for e in entries) + 1))
        problem = f"duplicate file_name {first['file_name']!r}"
    map_path.write_text(json.dumps(entries))
    return problem


@pytest.mark.parametrize('kind', ['listed but missing', 'duplicate id', 'duplicate file_name'])
def test_bad_test_id_map_stops_conversion_naming_it(tiny_root: Path, tmp_path: Path,
                                                    kind: str) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    first = json.loads((root / hw3.TEST_ID_MAP).read_text())[0]
    problem = _map_problem(root, kind)
    culprit = root / hw3.TEST_DIR / first['file_name'] if kind == 'listed but missing' \
        else root / hw3.TEST_ID_MAP
    proc = run_convert(root)
    assert_cli_error(proc, culprit, problem)
    if kind == 'listed but missing':
        assert str(root / hw3.TEST_ID_MAP) in proc.stderr  # says where it is listed


def test_identical_masks_in_two_class_files_stop_conversion_naming_both(
        tiny_root: Path, tmp_path: Path) -> None:
    """A class file copied over another (the same cells in two classes) would train each cell
    as two overlapping instances of two classes."""
    root = copy_root(tiny_root, tmp_path / 'data')
    sample = train_dirs(root)[0]
    class1, class2 = sample / 'class1.tif', sample / 'class2.tif'
    labels = tifffile.imread(class1)
    tifffile.imwrite(class2, labels)
    n = len(np.unique(labels)) - 1
    proc = run_convert(root)
    assert_cli_error(proc, class2, f'{n} of its {n} instance masks are identical to masks of '
                                   f'{class1}')
    assert len(proc.stderr.splitlines()) == 1
    assert not (root / 'annotations').exists()  # nothing written, no folder left


def test_one_identical_mask_is_enough(tiny_root: Path, tmp_path: Path) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    sample = train_dirs(root)[0]
    class1, class3 = sample / 'class1.tif', sample / 'class3.tif'
    labels = tifffile.imread(class1)
    cell = labels == np.unique(labels)[1]  # one cell of class1, pasted into class3 as well
    other = tifffile.imread(class3).astype(np.float64) if class3.is_file() else np.zeros(
        cell.shape)
    other[cell] = other.max() + 1
    tifffile.imwrite(class3, other)
    n = len(np.unique(other)) - 1
    assert_cli_error(run_convert(root), class3,
                     f'1 of its {n} instance masks are identical to masks of {class1}')


def test_one_image_with_the_default_folds_names_the_option(tiny_root: Path,
                                                           tmp_path: Path) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    for extra in train_dirs(root)[1:]:
        shutil.rmtree(extra)
    out = tmp_path / 'annotations'
    proc = run_tool(CONVERT, root, '--out-dir', out, ok=False, timeout=300)  # --folds 5
    assert_cli_error(proc, root / 'train', '1 image cannot be split into 5 folds (--folds 5); '
                                           'give --folds 0 for no folds')
    assert not out.exists()  # no train_all.json, not even the folder
    out.mkdir()
    (out / 'train_all.json').write_text('{"earlier": 1}')
    proc = run_tool(CONVERT, root, '--out-dir', out, '--folds', '3', ok=False, timeout=300)
    assert_cli_error(proc, root / 'train', '--folds 3')
    assert files_in(out) == ['train_all.json']  # the earlier file as it was
    assert (out / 'train_all.json').read_text() == '{"earlier": 1}'


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def make_read_only(folder: Path) -> Callable[[], None]:
    """Make ``folder`` refuse new files (chmod, or for root, which chmod does not stop, the
    immutable attribute); returns the undo. Skips the test where neither works."""
    folder.chmod(0o555)
    probe = folder / '.probe'
    try:
        probe.touch()
    except OSError:
        return lambda: folder.chmod(0o755)
    probe.unlink()
    folder.chmod(0o755)
    if subprocess.run(['chattr', '+i', str(folder)], capture_output=True).returncode:
        pytest.skip('cannot make a folder read-only here (root without chattr +i)')
    return lambda: subprocess.run(['chattr', '-i', str(folder)], check=True)


def test_read_only_output_folder_is_one_line_and_nothing_is_written(tiny_root: Path,
                                                                    tmp_path: Path) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    out = tmp_path / 'annotations'
    out.mkdir()
    undo = make_read_only(out)
    try:
        proc = run_tool(CONVERT, root, '--out-dir', out, '--folds', '2', ok=False, timeout=300)
    finally:
        undo()
    assert_cli_error(proc, out, 'cannot write there')
    assert len(proc.stderr.splitlines()) == 1
    assert files_in(out) == []
    assert 'images' not in proc.stdout  # refused before the conversion, not after it


def test_a_failed_write_leaves_the_earlier_files(tiny_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The files of a run land together: the disk failing at the third of them leaves the
    folder exactly as it was (no new train_all.json beside the old folds)."""
    from cellseg.formats import coco_conversion

    out = tmp_path / 'annotations'
    convert(tiny_root, out, folds=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    root = copy_root(tiny_root, tmp_path / 'data')
    shutil.rmtree(train_dirs(root)[0])  # another conversion: other bytes in every file
    real = coco_conversion.atomic_write_bytes
    calls = []

    def failing_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, 'No space left on device')
        return real(path, data)

    monkeypatch.setattr(coco_conversion, 'atomic_write_bytes', failing_third)
    with pytest.raises(OSError) as err:
        convert(root, out, folds=2)
    assert err.value.filename == str(out) and 'No space left' in err.value.strerror
    assert 'nothing written' in err.value.strerror
    assert len(calls) == 3
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left


# ---- conversion: documented skips ---------------------------------------------------------------

def test_unlisted_test_file_is_skipped_with_a_warning(tiny_root: Path, tmp_path: Path) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    extra = root / hw3.TEST_DIR / 'not-in-the-map.tif'
    shutil.copy(sorted((root / hw3.TEST_DIR).iterdir())[0], extra)
    proc = run_convert(root)
    assert proc.returncode == 0, proc.stderr
    assert f'WARNING {extra}: not listed in {root / hw3.TEST_ID_MAP}, skipped' in proc.stderr
    test = json.loads((root / 'annotations' / 'test.json').read_text())
    assert extra.name not in {Path(i['file_name']).name for i in test['images']}
    assert len(test['images']) == len(json.loads((root / hw3.TEST_ID_MAP).read_text()))


# ---- odd but valid data: converts, loads, trains ------------------------------------------------

def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope='module')
def odd_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny data with a grey, a 16-bit and a partly transparent RGBA train image, a 33x35
    image, an image without cells, and a 16-bit grey test image. Returns the paths by role."""
    root = copy_root(tiny_root, tmp_path_factory.mktemp('odd') / 'data')
    dirs = train_dirs(root)
    paths = dict(root=root, grey=dirs[0] / hw3.IMAGE_FILE, uint16=dirs[1] / hw3.IMAGE_FILE,
                 rgba=dirs[2] / hw3.IMAGE_FILE)
    rgb = {k: tifffile.imread(paths[k])[..., :3] for k in ('grey', 'uint16', 'rgba')}
    tifffile.imwrite(paths['grey'], rgb['grey'].mean(-1).astype(np.uint8))
    tifffile.imwrite(paths['uint16'], rgb['uint16'].astype(np.uint16) * 64 + 1000)
    alpha = np.full(rgb['rgba'].shape[:2], 255, np.uint8)
    alpha[:10, :10] = 0
    tifffile.imwrite(paths['rgba'], np.dstack([rgb['rgba'], alpha]))

    small = root / 'train' / 'small-33x35'
    small.mkdir()
    cell = _disk(33, 35, 16, 17, 8)
    img = np.full((33, 35, 3), 220, np.uint8)
    img[cell] = (90, 40, 140)
    tifffile.imwrite(small / hw3.IMAGE_FILE, img)
    tifffile.imwrite(small / 'class1.tif', cell.astype(np.float64))
    paths['small'] = small / hw3.IMAGE_FILE

    empty = root / 'train' / 'no-cells'
    empty.mkdir()
    tifffile.imwrite(empty / hw3.IMAGE_FILE, np.full((40, 50, 4), 230, np.uint8))
    tifffile.imwrite(empty / 'class2.tif', np.zeros((40, 50)))  # a class map with no ids
    paths['empty'] = empty / hw3.IMAGE_FILE

    test_image = sorted((root / hw3.TEST_DIR).iterdir())[0]
    grey16 = tifffile.imread(test_image)[..., :3].mean(-1).astype(np.uint16) * 16
    tifffile.imwrite(test_image, grey16)
    paths['test16'] = test_image
    convert(root, root / 'annotations', folds=0)  # for the pipelines; the CLI is tested below
    return paths


def test_odd_images_convert(odd_root: dict[str, Path], tmp_path: Path) -> None:
    root = odd_root['root']
    proc = run_convert(root, tmp_path)
    assert proc.returncode == 0, proc.stderr
    n = len(train_dirs(root))
    assert f'{n} images, ' in proc.stdout and '(1 images without instances)' in proc.stdout
    coco = json.loads((tmp_path / 'train_all.json').read_text())
    by_path = {root / i['file_name']: i for i in coco['images']}
    assert len(by_path) == n
    small = by_path[odd_root['small']]
    assert (small['height'], small['width']) == (33, 35)
    counts = {i['id']: 0 for i in coco['images']}
    for a in coco['annotations']:
        counts[a['image_id']] += 1
    assert counts[small['id']] == 1 and counts[by_path[odd_root['empty']]['id']] == 0


def test_odd_images_go_through_the_train_and_test_pipelines(
        odd_root: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    root = odd_root['root']
    train = build_dataset(root, 'train')
    assert len(train) == len(train_dirs(root))  # the image without cells is kept
    caplog.set_level(logging.WARNING, logger='cellseg')
    for i in range(len(train)):
        path = Path(train.get_data_info(i)['img_path'])
        packed = train[i]
        img, gt = packed['inputs'], packed['data_samples'].gt_instances
        assert img.dtype == torch.uint8
        assert img.shape[0] == 3 and gt.masks.masks.shape[1:] == img.shape[1:], path
        if path == odd_root['small']:
            assert tuple(img.shape) == (3, 33, 35) and len(gt) == 1
        elif path == odd_root['empty']:
            assert len(gt) == 0
        elif path == odd_root['grey']:
            assert (img[0] == img[1]).all() and (img[1] == img[2]).all()
        elif path == odd_root['uint16']:
            assert img.min() == 0 and img.max() == 255  # rescaled from its own range
    warned = [r.getMessage() for r in caplog.records if ALPHA_WARNING in r.getMessage()]
    assert warned and all(m.startswith(f"{odd_root['rgba']}: ") for m in warned)

    test = build_dataset(root, 'test')
    assert len(test) == len(json.loads((root / hw3.TEST_ID_MAP).read_text()))
    packed = test[item_of(test, odd_root['test16'])]
    assert packed['inputs'].shape[0] == 3
    assert packed['inputs'].max() == 255 and packed['inputs'].min() == 0


def test_odd_images_train(odd_root: dict[str, Path], tmp_path: Path) -> None:
    """One epoch of tools/train.py: a 33x35 image and an image without cells go through the
    model as well, and the partly transparent image is named in the run's output."""
    root = odd_root['root']
    proc = run_tool('tools/train.py', TINY, '--data-root', root, '--ann-dir', root / 'annotations',
                    '--work-dir', tmp_path, '--cfg-options', 'train_cfg.max_epochs=1',
                    'randomness.seed=0', 'val_cfg=None', 'val_dataloader=None',
                    'val_evaluator=None', 'default_hooks.checkpoint.save_best=None',
                    env={'OMP_NUM_THREADS': '1'}, timeout=600)
    assert f"{odd_root['rgba']}: {ALPHA_WARNING}" in proc.stderr
    steps = [(r['step'], r['loss']) for r in read_scalars(tmp_path) if 'loss' in r]
    assert [s for s, _ in steps] == list(range(1, -(-len(train_dirs(root)) // 2) + 1))
    assert np.isfinite([v for _, v in steps]).all()


# ---- files damaged after conversion: training and prediction stop naming them -------------------

@pytest.mark.parametrize('stage', ['train', 'test'])
@pytest.mark.parametrize('damage', UNREADABLE, ids=lambda f: f.__name__)
def test_unreadable_image_stops_loading_naming_it(tiny_root: Path, tiny_ann: Path, tmp_path: Path,
                                                  stage: str,
                                                  damage: Callable[[Path], None]) -> None:
    root = copy_root(tiny_root, tmp_path / 'data')
    shutil.copytree(tiny_ann, root / 'annotations')
    dataset = build_dataset(root, stage)
    culprit = train_dirs(root)[0] / hw3.IMAGE_FILE if stage == 'train' else sorted(
        (root / hw3.TEST_DIR).iterdir())[0]
    index = item_of(dataset, culprit)
    damage(culprit)
    with pytest.raises(hw3.HW3FormatError, match='cannot read as TIFF') as err:
        dataset[index]
    assert str(err.value).startswith(f'{culprit}: ')


@pytest.mark.parametrize('name', ['../../outside/secret.tif', '/etc/hostname'])
def test_annotation_file_names_outside_the_data_root_are_refused(name: str, tiny_root: Path,
                                                                 tiny_ann: Path,
                                                                 tmp_path: Path) -> None:
    ann = tmp_path / 'annotations'
    shutil.copytree(tiny_ann, ann)
    for path in ann.glob('*.json'):
        coco = json.loads(path.read_text())
        coco['images'][0]['file_name'] = name
        path.write_text(json.dumps(coco))
    done = run_tool('tools/train.py', TINY,
                    '--data-root', tiny_root, '--ann-dir', ann, '--work-dir', tmp_path / 'w',
                    ok=False)
    assert done.returncode == 1 and 'Traceback' not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {ann}/') and repr(name) in last, last
    assert not list((tmp_path / 'w').glob('*.pth'))
