"""The TIFF loading transform and the registered dataset through mmdet's own pipeline."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from mmdet.registry import DATASETS, TRANSFORMS
from mmdet.utils import register_all_modules

import cellseg.datasets.cell_dataset  # noqa: F401  (registers CellDataset)
import cellseg.datasets.transforms.load_cell_image_from_file  # noqa: F401  (registers LoadCellImageFromFile)
from cellseg.formats import hw3
from cellseg.testing.synthetic_cells import SYNTHETIC_CLASSES

register_all_modules(init_default_scope=True)


def _load(path: Path) -> np.ndarray:
    t = TRANSFORMS.build(dict(type='LoadCellImageFromFile'))
    out = t.transform(dict(img_path=str(path)))
    assert out['img'].dtype == np.uint8 and out['img'].ndim == 3 and out['img'].shape[2] == 3
    assert out['ori_shape'] == out['img'].shape[:2]
    return out['img']


def test_rgba_rgb_and_grey_versions_give_the_same_bgr(tmp_path: Path) -> None:
    grey = np.random.default_rng(0).integers(0, 256, (37, 53), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.dstack([rgb, np.full_like(grey, 255)])
    tifffile.imwrite(tmp_path / 'rgba.tif', rgba, compression='lzw')
    tifffile.imwrite(tmp_path / 'rgb.tif', rgb)
    tifffile.imwrite(tmp_path / 'grey.tif', grey)
    cv2.imwrite(str(tmp_path / 'grey.png'), grey)
    expected = rgb[..., ::-1]
    for name in ('rgba.tif', 'rgb.tif', 'grey.tif', 'grey.png'):
        assert np.array_equal(_load(tmp_path / name), expected), name


def test_channel_order_is_bgr_for_tiff_png_and_jpeg(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 30   # a little blue
    tifffile.imwrite(tmp_path / 'a.tif', np.dstack([rgb, np.full((16, 16), 255, np.uint8)]),
                     compression='lzw')
    cv2.imwrite(str(tmp_path / 'a.png'), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / 'a.jpg'), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    for name, tol in (('a.tif', 0), ('a.png', 0), ('a.jpg', 3)):
        img = _load(tmp_path / name).astype(int)
        assert np.abs(img - rgb[..., ::-1]).max() <= tol, name


def csbdeep_normalize(x: np.ndarray, pmin: float = 1, pmax: float = 99.8) -> np.ndarray:
    """csbdeep.utils.normalize (StarDist's), transcribed: percentiles over all pixels and
    channels, (x - mi) / (ma - mi + eps), here scaled to 0..255, clipped and rounded."""
    mi, ma = np.percentile(x, pmin), np.percentile(x, pmax)
    y = (x.astype(np.float64) - mi) / (ma - mi + 1e-20)
    return np.rint(np.clip(y * 255, 0, 255)).astype(np.uint8)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal but for float rounding at .5 (the reference computes in float64)."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_sixteen_bit_is_normalised_by_its_percentiles(tmp_path: Path) -> None:
    grey16 = np.linspace(1000, 5000, 64 * 64).reshape(64, 64).astype(np.uint16)
    tifffile.imwrite(tmp_path / 'g16.tif', grey16)
    img = _load(tmp_path / 'g16.tif')
    assert img.min() == 0 and img.max() == 255
    assert_close(img[..., 0], csbdeep_normalize(grey16))


def test_one_outlier_pixel_does_not_set_the_contrast(tmp_path: Path) -> None:
    """A 12-bit image with one saturated pixel: min..max scaling turned its cells (value 4000 of
    65535) to 16 of 255; the percentile rule keeps them bright."""
    rng = np.random.default_rng(0)
    img16 = rng.integers(100, 300, (80, 90)).astype(np.uint16)
    img16[20:40, 30:50] = 4000  # a cell
    img16[0, 0] = 65535  # a hot pixel
    tifffile.imwrite(tmp_path / 'hot.tif', img16)
    img = _load(tmp_path / 'hot.tif')[..., 0]
    assert_close(img, csbdeep_normalize(img16))
    assert img[20:40, 30:50].min() == 255 and img[0, 0] == 255
    assert np.rint((4000 - 100) * 255 / (65535 - 100)) <= 16  # what min..max gave the cell


def test_float32_tiff_is_read_by_the_same_rule(tmp_path: Path) -> None:
    """Fiji's 32-bit output (was refused); a NaN pixel reads 0 and does not enter the
    percentiles."""
    values = np.random.default_rng(1).normal(0.3, 0.05, (50, 60)).astype(np.float32)
    values[10, 10] = np.nan
    tifffile.imwrite(tmp_path / 'f32.tif', values)
    img = _load(tmp_path / 'f32.tif')[..., 0]
    finite = np.isfinite(values)
    assert img[10, 10] == 0
    assert_close(img[finite], csbdeep_normalize(values[finite]))


def test_planar_rgb_tiff_is_read_as_rgb(tmp_path: Path) -> None:
    """ImageJ writes RGB planes first (axes SYX); it was refused as not grey, RGB or RGBA."""
    rgb = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / 'planar.tif', np.moveaxis(rgb, -1, 0), photometric='rgb',
                     planarconfig='separate')
    assert tifffile.TiffFile(tmp_path / 'planar.tif').series[0].axes == 'SYX'
    assert np.array_equal(_load(tmp_path / 'planar.tif'), rgb[..., ::-1])
    assert np.array_equal(hw3.read_image(tmp_path / 'planar.tif'), rgb)


def test_a_constant_sixteen_bit_image_keeps_its_level(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / 'flat.tif', np.full((20, 20), 32768, np.uint16))
    assert (_load(tmp_path / 'flat.tif') == 128).all()  # 32768 / 65535 of the range, not 0


@pytest.mark.parametrize('suffix', ['.png', '.tif'])
@pytest.mark.parametrize('channels', [1, 3, 4])
def test_pipeline_and_read_image_give_the_same_pixels(tmp_path: Path, suffix: str,
                                                      channels: int) -> None:
    """One reader for training, testing and prediction: a 16-bit PNG ramp 1000..5000 is
    normalised by its percentiles by the pipeline too (mmcv's decoder gave value / 256:
    3..19)."""
    ramp = np.linspace(1000, 5000, 48 * 40).reshape(48, 40).astype(np.uint16)
    rgb16 = np.dstack([ramp, ramp[::-1], np.full_like(ramp, 3000)])
    pixels = {1: ramp, 3: rgb16, 4: np.dstack([rgb16, np.full_like(ramp, 65535)])}[channels]
    path = tmp_path / f'ramp{suffix}'
    if suffix == '.png':  # OpenCV writes BGR(A)
        cv2.imwrite(str(path), pixels if channels == 1 else pixels[..., [2, 1, 0, 3][:channels]])
    else:
        tifffile.imwrite(path, pixels)
    loaded = _load(path)
    assert np.array_equal(loaded, hw3.read_image(path, bgr=True))
    assert np.array_equal(loaded[..., ::-1], hw3.read_image(path))
    assert loaded.min() == 0 and loaded.max() == 255
    want = csbdeep_normalize(ramp if channels == 1 else rgb16)
    assert_close(loaded[..., ::-1], want if channels > 1 else np.repeat(want[..., None], 3, 2))


def test_decoding_options_read_image_would_ignore_are_refused() -> None:
    with pytest.raises(ValueError, match="color_type='grayscale'"):
        TRANSFORMS.build(dict(type='LoadCellImageFromFile', color_type='grayscale'))
    with pytest.raises(ValueError, match="imdecode_backend='pillow'"):
        TRANSFORMS.build(dict(type='LoadCellImageFromFile', imdecode_backend='pillow'))


def test_unsupported_image_kinds_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / 'complex.tif'  # float32 is read now; complex numbers are no image
    tifffile.imwrite(bad, np.zeros((8, 8), np.complex64))
    with pytest.raises(hw3.HW3FormatError, match='unsupported pixel type') as err:
        _load(bad)
    assert str(bad) in str(err.value)
    two = tmp_path / 'two.tif'
    tifffile.imwrite(two, np.zeros((8, 8, 2), np.uint8), photometric='minisblack',
                     planarconfig='contig')
    with pytest.raises(hw3.HW3FormatError, match=str(two)):
        _load(two)


def test_mmdet_load_annotations_yields_the_class_map_instances(tiny_root: Path,
                                                               tiny_ann: Path) -> None:
    dataset = DATASETS.build(dict(
        type='CellDataset', data_root=str(tiny_root), ann_file=str(tiny_ann / 'train_all.json'),
        data_prefix=dict(img=''), filter_cfg=dict(filter_empty_gt=False, min_size=0),
        pipeline=[dict(type='LoadCellImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]))
    # no classes given: the annotation file's, with a colour each
    assert dataset.metainfo['classes'] == SYNTHETIC_CLASSES
    assert len(dataset.metainfo['palette']) == len(SYNTHETIC_CLASSES)
    assert len(dataset) == len(hw3.list_train_samples(tiny_root))
    checked = 0
    for i in range(len(dataset)):
        item = dataset[i]
        sample_dir = Path(item['img_path']).parent
        expected = []
        for k, path in sorted(hw3.class_files(sample_dir).items()):
            labels = tifffile.imread(path)
            expected += [(k - 1, labels == v) for v in np.unique(labels[labels > 0])]
        masks = item['gt_masks'].masks
        assert masks.shape[0] == len(expected) == len(item['gt_bboxes_labels'])
        for m, label, (k, mask) in zip(masks, item['gt_bboxes_labels'], expected):
            assert label == k
            assert np.array_equal(m.astype(bool), mask)
            checked += 1
        assert item['img'].shape[:2] == masks.shape[1:]
    assert checked > 10
