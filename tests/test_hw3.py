"""The HW3 reader and the COCO conversion: pixel-exact round trips and clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile

from cellseg.formats import hw3
from cellseg.formats.coco_conversion import convert, split_folds
from cellseg.testing.synthetic_cells import SYNTHETIC_CLASSES


def assert_coco_matches_class_maps(data_root: Path, coco: dict) -> int:
    """Every instance of every class map comes back from the RLEs, pixel for pixel, with its class
    (and nothing else does). Returns the number of instances checked."""
    by_image: dict[int, list[dict]] = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    checked = 0
    for img in coco['images']:
        sample_dir = data_root / Path(img['file_name']).parent
        anns = by_image.get(img['id'], [])
        expected = []
        for k, path in sorted(hw3.class_files(sample_dir).items()):
            labels = tifffile.imread(path)
            for inst_id in np.unique(labels[labels > 0]):
                expected.append((k, labels == inst_id))
        assert len(anns) == len(expected), img['file_name']
        for ann, (k, mask) in zip(anns, expected):
            assert ann['category_id'] == k
            assert ann['segmentation']['size'] == [img['height'], img['width']]
            assert isinstance(ann['segmentation']['counts'], str)
            decoded = mask_utils.decode(ann['segmentation']).astype(bool)
            assert np.array_equal(decoded, mask), (img['file_name'], ann['id'])
            assert ann['area'] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            checked += 1
    return checked


def test_generated_data_round_trips_pixel_for_pixel(tiny_root: Path, tiny_ann: Path) -> None:
    coco = json.loads((tiny_ann / 'train_all.json').read_text())
    assert [c['name'] for c in coco['categories']] == list(SYNTHETIC_CLASSES)
    assert [c['id'] for c in coco['categories']] == [1, 2, 3, 4]
    assert all(a['iscrowd'] == 0 for a in coco['annotations'])
    assert assert_coco_matches_class_maps(tiny_root, coco) > 10


def test_consep_round_trips_and_counts(consep_root: Path, tmp_path: Path) -> None:
    summary = convert(consep_root, tmp_path, folds=5)
    assert summary['images'] == 207
    assert summary['instances'] == 9106
    assert summary['instances_per_class'] == dict(class1=239, class2=2298, class3=3195,
                                                  class4=3374)
    coco = json.loads((tmp_path / 'train_all.json').read_text())
    assert assert_coco_matches_class_maps(consep_root, coco) == 9106
    test = json.loads((tmp_path / 'test.json').read_text())
    id_map = json.loads((consep_root / 'test_image_name_to_ids.json').read_text())
    assert {(i['id'], f"test_release/{i['file_name']}", i['height'], i['width']) for i in id_map} \
        == {(i['id'], i['file_name'], i['height'], i['width']) for i in test['images']}


def test_ids_are_stable_across_runs(tiny_root: Path, tmp_path: Path) -> None:
    convert(tiny_root, tmp_path / 'a', folds=2)
    convert(tiny_root, tmp_path / 'b', folds=2)
    for name in ('train_all.json', 'fold0_train.json', 'fold1_val.json', 'test.json'):
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()


def test_folds_are_disjoint_cover_everything_and_balance_classes(tiny_ann: Path) -> None:
    all_ids = {i['id'] for i in json.loads((tiny_ann / 'train_all.json').read_text())['images']}
    vals = []
    for f in range(2):
        train = {i['id'] for i in json.loads((tiny_ann / f'fold{f}_train.json').read_text())[
            'images']}
        val = json.loads((tiny_ann / f'fold{f}_val.json').read_text())
        val_ids = {i['id'] for i in val['images']}
        assert train.isdisjoint(val_ids) and train | val_ids == all_ids
        assert all(a['image_id'] in val_ids for a in val['annotations'])
        vals.append(val_ids)
    assert vals[0].isdisjoint(vals[1]) and vals[0] | vals[1] == all_ids


def test_split_folds_balances_per_class_counts() -> None:
    rng = np.random.default_rng(1)
    counts = rng.poisson([1, 10, 15, 15], size=(200, 4))
    counts[:40, 0] = 0  # a rare class concentrated in few images
    folds = split_folds(counts, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(200))
    per_fold = np.stack([counts[f].sum(0) for f in folds])
    share = per_fold / counts.sum(0)
    assert np.abs(share - 0.2).max() < 0.03, share
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 8


def test_test_json_carries_the_id_map(tiny_root: Path, tiny_ann: Path) -> None:
    test = json.loads((tiny_ann / 'test.json').read_text())
    id_map = json.loads((tiny_root / 'test_image_name_to_ids.json').read_text())
    assert sorted((i['id'], i['height'], i['width']) for i in test['images']) == sorted(
        (i['id'], i['height'], i['width']) for i in id_map)
    for img in test['images']:
        assert hw3.tiff_shape(tiny_root / img['file_name']) == (img['height'], img['width'])


# ---- bad inputs: each error names the file and the problem ----

@pytest.fixture()
def one_image_root(tiny_root: Path, tmp_path: Path) -> Path:
    """A copy of the tiny data root reduced to one train folder holding several classes."""
    root = tmp_path / 'data'
    samples = hw3.list_train_samples(tiny_root)
    sample = max(samples, key=lambda s: len(s.class_paths))
    shutil.copytree(tiny_root / 'train' / sample.name, root / 'train' / sample.name)
    return root


def _sample_dir(root: Path) -> Path:
    return next((root / 'train').iterdir())


def _first_class_file(root: Path) -> Path:
    return sorted(_sample_dir(root).glob('class*.tif'))[0]


@pytest.mark.parametrize('damage, message', [
    ('zero-byte image', 'cannot read as TIFF'),
    ('truncated image', 'cannot read as TIFF'),
    ('png named .tif', 'cannot read as TIFF'),
    ('zero-byte mask', 'cannot read as TIFF'),
    ('mask shape', 'differs from its image'),
    ('fractional ids', 'fractional instance ids'),
    ('nan ids', 'NaN or infinite'),
    ('negative ids', 'negative instance ids'),
    ('class5', 'names 4 classes'),
    ('class0', 'unknown class file'),
    ('no image', 'no image.tif'),
])
def test_bad_input_names_the_file(one_image_root: Path, tmp_path: Path, damage: str,
                                  message: str) -> None:
    d = _sample_dir(one_image_root)
    mask_path = _first_class_file(one_image_root)
    labels = tifffile.imread(mask_path)
    culprit = d / 'image.tif'
    if damage == 'zero-byte image':
        culprit.write_bytes(b'')
    elif damage == 'truncated image':
        culprit.write_bytes(culprit.read_bytes()[:200])
    elif damage == 'png named .tif':
        culprit.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 64)
    elif damage == 'no image':
        culprit.unlink()
        culprit = d
    else:
        culprit = mask_path
        if damage == 'zero-byte mask':
            mask_path.write_bytes(b'')
        elif damage == 'mask shape':
            tifffile.imwrite(mask_path, labels[:-3])
        elif damage == 'fractional ids':
            tifffile.imwrite(mask_path, np.where(labels > 0, labels + 0.5, 0.0))
        elif damage == 'nan ids':
            bad = labels.astype(np.float64)
            bad[0, 0] = np.nan
            tifffile.imwrite(mask_path, bad)
        elif damage == 'negative ids':
            tifffile.imwrite(mask_path, np.where(labels > 0, -labels, 0.0))
        elif damage in ('class5', 'class0'):
            culprit = d / f'{damage}.tif'
            tifffile.imwrite(culprit, labels)
            (one_image_root / hw3.CLASSES_TXT).write_text('a\nb\nc\nd\n')
    with pytest.raises(hw3.HW3FormatError) as err:
        convert(one_image_root, tmp_path / 'ann', folds=0)
    assert str(culprit) in str(err.value)
    assert message in str(err.value)


def test_absent_class_file_means_no_instance_of_that_class(one_image_root: Path,
                                                           tmp_path: Path) -> None:
    mask_path = _first_class_file(one_image_root)
    k = int(mask_path.stem[-1])
    before = convert(one_image_root, tmp_path / 'a', folds=0)['instances_per_class']
    mask_path.unlink()
    after = convert(one_image_root, tmp_path / 'b', folds=0)['instances_per_class']
    assert after[f'class{k}'] == 0 and before[f'class{k}'] > 0
    assert {c: n for c, n in after.items() if c != f'class{k}'} == {
        c: n for c, n in before.items() if c != f'class{k}'}


def test_integer_masks_and_sparse_ids(one_image_root: Path, tmp_path: Path) -> None:
    mask_path = _first_class_file(one_image_root)
    labels = tifffile.imread(mask_path)
    tifffile.imwrite(mask_path, (labels * 100_000).astype(np.uint32))  # sparse, integer ids
    coco = convert(one_image_root, tmp_path, folds=0)
    assert coco['instances'] > 0
    assert assert_coco_matches_class_maps(
        one_image_root, json.loads((tmp_path / 'train_all.json').read_text())) == coco['instances']


def test_test_map_errors_name_the_file(tiny_root: Path, tmp_path: Path) -> None:
    root = tmp_path / 'data'
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns('annotations'))
    map_path = root / hw3.TEST_ID_MAP
    entries = json.loads(map_path.read_text())
    missing = root / hw3.TEST_DIR / entries[0]['file_name']
    missing.unlink()
    with pytest.raises(hw3.HW3FormatError, match='missing') as err:
        hw3.test_image_infos(root)
    assert str(missing) in str(err.value)
    shutil.copy(tiny_root / hw3.TEST_DIR / entries[0]['file_name'], missing)
    wrong = [dict(e, height=e['height'] + 1) if i == 0 else e for i, e in enumerate(entries)]
    map_path.write_text(json.dumps(wrong))
    with pytest.raises(hw3.HW3FormatError, match='differs from'):
        hw3.test_image_infos(root)
    dup = entries + [dict(entries[0], file_name='other.tif')]
    map_path.write_text(json.dumps(dup))
    with pytest.raises(ValueError, match=str(map_path).replace('\\', '\\\\')):
        hw3.test_image_infos(root)


def test_unlisted_test_file_is_logged_as_skipped(tiny_root: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / 'data'
    shutil.copytree(tiny_root, root, ignore=shutil.ignore_patterns('annotations'))
    extra = root / hw3.TEST_DIR / 'unlisted.tif'
    tifffile.imwrite(extra, np.zeros((8, 8, 4), np.uint8))
    infos = hw3.test_image_infos(root)
    assert 'unlisted.tif' not in {i.file_name for i in infos}
    assert any('unlisted.tif' in r.getMessage() and 'skipped' in r.getMessage()
               for r in caplog.records)
