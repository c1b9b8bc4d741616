"""The generated demo dataset: the real HW3 layout, byte-for-byte reproducible, ground truth that
matches the drawn cells, and classes that differ visibly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile

from cellseg.testing import demo_data, synthetic_cells
from cellseg.testing.demo_data import SYNTHETIC_CLASSES, make_demo_dataset, render_image

REPO = Path(__file__).resolve().parents[1]
LZW = 5


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


def _train_maps(folder: Path) -> dict[int, np.ndarray]:
    return {int(p.stem[5:]): tifffile.imread(p) for p in sorted(folder.glob('class*.tif'))}


@pytest.fixture(scope='module')
def default_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp('demo_full')
    return root, make_demo_dataset(root, seed=0)


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = _files(Path(make_demo_dataset(tmp_path / 'a', seed=3, tiny=True)['root']))
    b = _files(Path(make_demo_dataset(tmp_path / 'b', seed=3, tiny=True)['root']))
    assert a == b
    assert not any(name.endswith('.tmp') for name in a)
    c_root = tmp_path / 'c'
    make_demo_dataset(c_root, seed=4, tiny=True)
    c = _files(c_root)
    assert set(c) != set(a)  # names come from the seed as well
    images_a = sorted(v for k, v in a.items() if k.endswith('image.tif'))
    images_c = sorted(v for k, v in c.items() if k.endswith('image.tif'))
    assert not set(images_a) & set(images_c)


def test_train_files_follow_the_hw3_layout(tmp_path: Path) -> None:
    summary = make_demo_dataset(tmp_path, seed=0, tiny=True)
    folders = sorted((tmp_path / 'train').iterdir())
    assert len(folders) == summary['train_images'] == 6
    counts = dict.fromkeys(SYNTHETIC_CLASSES, 0)
    missing_class = 0
    for folder in folders:
        assert {p.name for p in folder.iterdir()} <= {'image.tif'} | {
            f'{c}.tif' for c in SYNTHETIC_CLASSES}
        with tifffile.TiffFile(folder / 'image.tif') as tif:
            assert tif.pages[0].compression == LZW
            image = tif.asarray()
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4
        assert (image[..., 3] == 255).all()
        maps = _train_maps(folder)
        assert maps, folder  # every train image holds at least one cell
        missing_class += len(maps) < 4
        owner = np.zeros(image.shape[:2], np.int64)
        seen_ids: set[int] = set()
        for k, labels in maps.items():
            assert labels.dtype == np.float64 and labels.shape == image.shape[:2]
            assert (labels == np.floor(labels)).all() and labels.min() == 0
            ids = set(np.unique(labels[labels > 0]).astype(int).tolist())
            assert ids, f'{folder.name}/class{k}.tif is present but empty'
            assert not ids & seen_ids, 'an id is used by two class files'
            seen_ids |= ids
            assert not (owner[labels > 0]).any(), 'a pixel belongs to two class files'
            owner[labels > 0] = labels[labels > 0]
            sizes = np.bincount(labels.astype(np.int64).ravel())
            assert sizes[sorted(ids)].min() >= synthetic_cells.MIN_VISIBLE
            counts[SYNTHETIC_CLASSES[k - 1]] += len(ids)
        assert seen_ids == set(range(1, len(seen_ids) + 1)), 'ids run 1..N over the image'
    assert missing_class >= 1
    assert counts == summary['train_instances_per_class']
    assert all(counts.values()), 'every class appears in the train split'
    assert summary['smallest_side'] < 64


def test_test_split_and_ground_truth_agree(tmp_path: Path) -> None:
    summary = make_demo_dataset(tmp_path, seed=0, tiny=True)
    id_map = json.loads((tmp_path / 'test_image_name_to_ids.json').read_text())
    gt = json.loads((tmp_path / 'test_gt.json').read_text())
    assert len(id_map) == summary['test_images'] == 2
    assert sorted(e['id'] for e in id_map) == [1, 2]
    assert {(e['id'], 'test_release/' + e['file_name'], e['height'], e['width']) for e in id_map} \
        == {(i['id'], i['file_name'], i['height'], i['width']) for i in gt['images']}
    assert sorted(p.name for p in (tmp_path / 'test_release').iterdir()) == sorted(
        e['file_name'] for e in id_map)
    for e in id_map:
        with tifffile.TiffFile(tmp_path / 'test_release' / e['file_name']) as tif:
            assert tif.pages[0].compression == LZW
            image = tif.asarray()
        assert image.shape == (e['height'], e['width'], 4) and image.dtype == np.uint8
        assert (image[..., 3] == 255).all()
    assert gt['categories'] == [{'id': k + 1, 'name': n} for k, n in enumerate(SYNTHETIC_CLASSES)]
    per_class = dict.fromkeys(SYNTHETIC_CLASSES, 0)
    for a in gt['annotations']:
        per_class[SYNTHETIC_CLASSES[a['category_id'] - 1]] += 1
    assert per_class == summary['test_instances_per_class']


def test_ground_truth_is_the_rendered_cells(tmp_path: Path) -> None:
    """Re-render each test image from its stream: test_gt.json holds exactly its instances."""
    make_demo_dataset(tmp_path, seed=5, tiny=True)
    gt = json.loads((tmp_path / 'test_gt.json').read_text())
    by_file = {im['file_name']: im['id'] for im in gt['images']}
    _, test_specs = demo_data._plan(5, tiny=True)
    for i, spec in enumerate(test_specs):
        rgba, ids, class_of_id = synthetic_cells.render_image(
            np.random.default_rng([5, 1, i]), spec.height, spec.width, spec.n_cells,
            spec.classes, spec.first_class)
        file_name = f'test_release/{spec.name}.tif'
        assert np.array_equal(tifffile.imread(tmp_path / file_name), rgba)
        anns = [a for a in gt['annotations'] if a['image_id'] == by_file[file_name]]
        assert len(anns) == ids.max()
        for a in anns:
            mask = mask_utils.decode(a['segmentation']).astype(bool)
            inst = np.unique(ids[mask])
            assert inst.size == 1 and np.array_equal(ids == inst[0], mask)
            assert class_of_id[inst[0]] == a['category_id']


def test_render_image_contract() -> None:
    rgba, ids, class_of_id = render_image(np.random.default_rng(1), 90, 70, 12)
    assert rgba.shape == (90, 70, 4) and rgba.dtype == np.uint8 and (rgba[..., 3] == 255).all()
    assert ids.shape == (90, 70) and ids.dtype == np.int32
    n = int(ids.max())
    assert n >= 3 and class_of_id[0] == 0 and len(class_of_id) == n + 1
    assert set(class_of_id[1:].tolist()) <= {1, 2, 3, 4}
    assert (np.bincount(ids.ravel(), minlength=n + 1)[1:] >= synthetic_cells.MIN_VISIBLE).all()
    again = render_image(np.random.default_rng(1), 90, 70, 12)
    assert all(np.array_equal(x, y) for x, y in zip((rgba, ids, class_of_id), again))
    _, _, only = render_image(np.random.default_rng(2), 120, 120, 20, classes=[2, 3])
    assert set(only[1:].tolist()) <= {2, 3} and len(only) > 1
    with pytest.raises(ValueError):
        render_image(np.random.default_rng(0), 64, 64, 3, classes=[5])


def test_default_dataset(default_root: tuple[Path, dict]) -> None:
    root, summary = default_root
    sides = []
    lacking = 0
    for folder in (root / 'train').iterdir():
        sides.append(tifffile.TiffFile(folder / 'image.tif').pages[0].shape[:2])
        lacking += len(list(folder.glob('class*.tif'))) < 4
        if max(sides[-1]) > 1333:  # more instances than COCO's 100 detections per image
            assert sum(len(np.unique(m)) - 1 for m in _train_maps(folder).values()) > 100
    assert len(sides) == summary['train_images'] >= 20
    assert max(max(s) for s in sides) > 1333 and min(min(s) for s in sides) < 64
    assert lacking >= 3
    assert summary['largest_side'] > 1333 and summary['smallest_side'] < 64

    id_map = json.loads((root / 'test_image_name_to_ids.json').read_text())
    gt = json.loads((root / 'test_gt.json').read_text())
    ids_in_name_order = [e['id'] for e in sorted(id_map, key=lambda e: e['file_name'])]
    assert sorted(ids_in_name_order) == list(range(1, len(id_map) + 1))
    assert ids_in_name_order != sorted(ids_in_name_order), 'ids are shuffled, as in the real map'
    images = {im['id']: im for im in gt['images']}
    assert set(images) == {e['id'] for e in id_map}
    for e in id_map:
        im = images[e['id']]
        assert im['file_name'] == 'test_release/' + e['file_name']
        shape = tifffile.TiffFile(root / im['file_name']).pages[0].shape[:2]
        assert shape == (e['height'], e['width']) == (im['height'], im['width'])
    assert any(max(im['height'], im['width']) > 1333 for im in images.values())

    assert [a['id'] for a in gt['annotations']] == list(range(1, len(gt['annotations']) + 1))
    union = {i: np.zeros((im['height'], im['width']), np.uint8) for i, im in images.items()}
    areas: dict[int, list[float]] = {k: [] for k in range(1, 5)}
    for a in gt['annotations']:
        im = images[a['image_id']]
        assert a['iscrowd'] == 0 and a['category_id'] in areas
        assert a['segmentation']['size'] == [im['height'], im['width']]
        assert isinstance(a['segmentation']['counts'], str)
        mask = mask_utils.decode(a['segmentation'])
        assert mask.sum() >= synthetic_cells.MIN_VISIBLE and a['area'] == mask.sum()
        ys, xs = np.nonzero(mask)
        assert a['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        union[a['image_id']] += mask
        areas[a['category_id']].append(a['area'])
    assert all(u.max() <= 1 for u in union.values()), 'masks of one image overlap'
    # at most 100 cells per test image: COCO AP counts 100 detections per image
    per_image = np.bincount([a['image_id'] for a in gt['annotations']])
    assert per_image.max() <= 100

    mean = {k: float(np.mean(v)) for k, v in areas.items()}
    assert mean[1] < mean[2] < mean[4], mean
    size = sum(p.stat().st_size for p in root.rglob('*') if p.is_file())
    assert size < 10e6, size


def test_classes_differ_in_colour(default_root: tuple[Path, dict]) -> None:
    root, _ = default_root
    sums = np.zeros((5, 3))
    counts = np.zeros(5)
    for folder in sorted((root / 'train').iterdir())[:12]:
        rgb = tifffile.imread(folder / 'image.tif')[..., :3].astype(np.float64)
        maps = _train_maps(folder)
        cls = np.zeros(rgb.shape[:2], np.int64)
        for k, labels in maps.items():
            cls[labels > 0] = k
        for k in range(5):
            sums[k] += rgb[cls == k].sum(0)
            counts[k] += (cls == k).sum()
    r, g, b = (sums / counts[:, None]).T
    grey = (r + g + b) / 3
    assert grey[1] < grey[3] < grey[2] < grey[0]  # dark nuclei, mid spindles, pale cells, stain
    assert b[4] > r[4] and b[4] > g[4]  # class4 is blue
    assert r[3] > g[3] > b[3]  # class3 is brown
    assert r[2] > b[2] > g[2]  # class2 is pink
    assert b[1] > r[1] > g[1]  # class1 is purple


def test_regenerating_replaces_a_demo_but_refuses_foreign_data(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path / 'd', seed=0, tiny=True)
    make_demo_dataset(tmp_path / 'd', seed=1, tiny=True)
    again = make_demo_dataset(tmp_path / 'fresh', seed=1, tiny=True)
    assert _files(tmp_path / 'd') == _files(Path(again['root']))  # no image of seed 0 is left

    foreign = tmp_path / 'foreign'
    (foreign / 'train' / 'real_sample').mkdir(parents=True)
    (foreign / 'train' / 'real_sample' / 'image.tif').write_bytes(b'not ours')
    with pytest.raises(FileExistsError, match='real_sample'):
        make_demo_dataset(foreign, seed=0, tiny=True)
    assert (foreign / 'train' / 'real_sample' / 'image.tif').read_bytes() == b'not ours'


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / 'cli'
    proc = subprocess.run([sys.executable, str(REPO / 'data_prep' / 'make_demo_data.py'), str(out),
                           '--tiny', '--seed', '2'], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'train: 6 images' in proc.stdout and 'test: 2 images' in proc.stdout
    assert str(out) in proc.stdout
    assert _files(out) == _files(Path(make_demo_dataset(tmp_path / 'lib', seed=2,
                                                        tiny=True)['root']))
