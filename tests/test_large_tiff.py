"""Images read tile by tile from disk (cellseg/apis/predict_large.py): the same cells as the
in-memory tiled path, and a run killed part-way resumes to the outputs of an uninterrupted run.

A 1024 x 1024 TIFF stored in 256 px tiles stands for a whole slide: the size threshold is
lowered so that it takes the tile path, and the model tiles at 256 px so that 25 tiles, cells
cut by their borders and merges across them occur in a few seconds."""
from __future__ import annotations

import csv
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
from tool_runner import kill_when, run_tool, start_tool

SCORE_THR = 0.2  # the one-epoch tiny model scores dozens of cells of this image above it
TILING = {'model.type': 'TiledMaskRCNN', 'model.tile_cfg.size': 256,
          'model.tile_cfg.overlap': 64, 'model.tile_cfg.batch_size': 2}
STATE = Path('.cellseg_predict') / 'large' / 'slide' / 'tiles'


@pytest.fixture(scope='module')
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo cells, 1024 x 1024 px, stored in 256 px TIFF tiles."""
    from cellseg.testing.synthetic_cells import render_image

    rng = np.random.default_rng(3)
    image = np.zeros((1024, 1024, 3), np.uint8)
    for y in range(0, 1024, 512):
        for x in range(0, 1024, 512):
            image[y:y + 512, x:x + 512] = render_image(rng, 512, 512, 240)[0][..., :3]
    path = tmp_path_factory.mktemp('slide') / 'slide.tif'
    tifffile.imwrite(path, image, tile=(256, 256), photometric='rgb', compression='zlib')
    return path


@pytest.fixture(scope='module')
def both_paths(tiny_checkpoint: Path, slide: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, Path]:
    """The slide predicted from disk and in memory by one tiled model: the two output folders."""
    from cellseg.apis.predict import load_model, predict_files
    from cellseg.apis.prediction_folder import prediction_run, prepare_output_dir

    model = load_model(tiny_checkpoint, device='cpu', score_thr=SCORE_THR,
                       cfg_options=dict(TILING))
    outs = []
    for name, pixels in (('disk', 1), ('memory', 10**12)):
        out = tmp_path_factory.mktemp(name)
        prepare_output_dir(out, prediction_run(tiny_checkpoint, SCORE_THR))
        summary = predict_files(model, [slide], out, SCORE_THR, progress=False,
                                large_image_pixels=pixels)
        assert not summary.failed
        outs.append(out)
    return outs[0], outs[1]


def _rows(out: Path) -> list[dict]:
    with open(out / 'instances.csv', newline='') as f:
        return list(csv.DictReader(f))


def test_the_tile_path_finds_the_cells_the_in_memory_path_finds(both_paths: tuple[Path, Path]
                                                                 ) -> None:
    disk, memory = both_paths
    # the tile path writes what only it writes: a tiled BigTIFF, no overlay
    with tifffile.TiffFile(disk / 'slide_labels.tif') as tif:
        assert tif.is_bigtiff and tif.pages[0].is_tiled and tif.pages[0].dtype == np.uint32
    assert not (disk / 'slide_overlay.png').exists()
    assert (memory / 'slide_overlay.png').exists()
    # ids differ by definition (the in-memory path numbers the whole image by score): rows
    # agree in everything else
    disk_rows, memory_rows = _rows(disk), _rows(memory)
    assert len(disk_rows) > 20
    def measured(r: dict) -> tuple:
        return tuple(v for k, v in r.items() if k != 'instance_id')
    assert sorted(map(measured, disk_rows)) == sorted(map(measured, memory_rows))
    # and the label images are the same partition of the pixels, the class maps equal
    a = tifffile.imread(disk / 'slide_labels.tif')
    b = tifffile.imread(memory / 'slide_labels.tif')
    assert np.array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    assert pairs.shape[1] == len(disk_rows) == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))
    assert np.array_equal(tifffile.imread(disk / 'slide_classes.tif'),
                          tifffile.imread(memory / 'slide_classes.tif'))


def test_a_killed_tile_run_resumes_to_the_uninterrupted_outputs(
        tiny_checkpoint: Path, slide: Path, tmp_path: Path) -> None:
    def args(out: Path) -> list:
        return [tiny_checkpoint, slide, '--out-dir', out, '--score-thr', str(SCORE_THR),
                '--device', 'cpu', '--from-disk-above', '0.5', '--cfg-options',
                *(f'{k}={v}' for k, v in TILING.items())]

    # the uninterrupted run as the killed one runs, one thread (another thread count may
    # round scores differently in their last digits)
    uninterrupted = tmp_path / 'uninterrupted'
    run_tool('tools/predict.py', *args(uninterrupted), env={'OMP_NUM_THREADS': '1'})
    out = tmp_path / 'out'
    log = tmp_path / 'first.log'
    proc = start_tool('tools/predict.py', *args(out), output=log, env={'OMP_NUM_THREADS': '1'})
    kill_when(proc, lambda: len(list((out / STATE).glob('*.npz'))) >= 8, log)
    tiles_done = len(list((out / STATE).glob('*.npz')))
    assert proc.returncode == -signal.SIGKILL and 8 <= tiles_done < 25, log.read_text()[-2000:]
    assert not (out / 'slide.geojson').exists()
    shutil.copytree(out / STATE, tmp_path / 'kept_tiles')

    done = run_tool('tools/predict.py', *args(out), env={'OMP_NUM_THREADS': '1'})
    assert '1 images predicted' in done.stdout
    # the tiles predicted before the kill were read back, not predicted again
    for kept in (tmp_path / 'kept_tiles').iterdir():
        assert (out / STATE / kept.name).stat().st_mtime_ns == kept.stat().st_mtime_ns
    assert (out / 'instances.csv').read_bytes() == (uninterrupted / 'instances.csv').read_bytes()
    assert (out / 'slide.geojson').read_bytes() == (uninterrupted / 'slide.geojson').read_bytes()
    for suffix in ('_labels.tif', '_classes.tif'):
        assert np.array_equal(tifffile.imread(out / f'slide{suffix}'),
                              tifffile.imread(uninterrupted / f'slide{suffix}'))


@pytest.mark.parametrize('kind', ['uint16 grey', 'uint16 planar RGB', 'float32 grey', 'uint8 RGBA'])
def test_regions_read_as_the_whole_image_is_read(kind: str, tmp_path: Path) -> None:
    """A region read from disk is the same crop of the pixels ``read_image`` gives the whole
    image: the percentile rule (here every pixel is sampled: the image is under
    PERCENTILE_SAMPLE_PIXELS), planar samples, alpha."""
    from cellseg.formats.image_regions import open_regions, percentile_limits, region_rgb
    from cellseg.formats.images import read_image

    rng = np.random.default_rng(0)
    if kind == 'uint16 grey':
        pixels = rng.integers(100, 4000, (300, 410)).astype(np.uint16)
        pixels[5, 7] = 65535  # an outlier the percentiles ignore
        options = dict(tile=(128, 128))
    elif kind == 'uint16 planar RGB':
        pixels = rng.integers(0, 4096, (3, 300, 410)).astype(np.uint16)
        options = dict(photometric='rgb', planarconfig='separate')
    elif kind == 'float32 grey':
        pixels = rng.normal(0.5, 0.1, (300, 410)).astype(np.float32)
        options = dict(tile=(128, 128))
    else:
        pixels = rng.integers(0, 256, (300, 410, 4)).astype(np.uint8)
        options = dict(photometric='rgb', extrasamples=['unassalpha'], tile=(128, 128))
    path = tmp_path / 'image.tif'
    tifffile.imwrite(path, pixels, **options)
    whole = read_image(path)
    with open_regions(path) as regions:
        assert (regions.height, regions.width) == whole.shape[:2]
        limits = percentile_limits(regions)
        assert (limits is None) == (kind == 'uint8 RGBA')
        assert np.array_equal(region_rgb(regions, 0, 0, 300, 410, limits), whole)
        assert np.array_equal(region_rgb(regions, 37, 101, 250, 333, limits, bgr=True),
                              whole[37:250, 101:333, ::-1])


def test_a_slide_without_a_slide_reader_is_one_clear_error(tmp_path: Path) -> None:
    import importlib.util

    from cellseg.formats.image_regions import open_regions
    from cellseg.formats.problems import FormatError

    if any(importlib.util.find_spec(m) for m in ('tiffslide', 'openslide')):
        pytest.skip('a slide reader is installed')
    path = tmp_path / 'slide.svs'
    path.write_bytes(b'II*\x00')
    with pytest.raises(FormatError, match=r'slide\.svs: reading \.svs slides needs tiffslide or '
                                          r'openslide: pip install tiffslide'):
        open_regions(path)
