"""Shared fixtures: generated demo data (tiny) and the real CoNSeP data when ../shared has it."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONSEP = REPO.parent / 'shared' / 'data' / 'consep'


@pytest.fixture(scope='session')
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated dataset in the HW3 layout (shared by tests that only read it)."""
    from cellseg.testing.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp('tiny_hw3')
    make_demo_dataset(root, seed=0, tiny=True)
    return root


@pytest.fixture(scope='session')
def tiny_ann(tiny_root: Path) -> Path:
    """COCO files of ``tiny_root`` (2 folds: the tiny set has only a few images)."""
    from cellseg.formats.coco_conversion import convert

    convert(tiny_root, tiny_root / 'annotations', folds=2, seed=0)
    return tiny_root / 'annotations'


@pytest.fixture(scope='session')
def consep_root() -> Path:
    if not (CONSEP / 'train').is_dir():
        pytest.skip('../shared/data/consep is not present')
    return CONSEP


@pytest.fixture(scope='session')
def tiny_checkpoint(tiny_root: Path, tiny_ann: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model trained one epoch by tools/train.py: a checkpoint as the project writes
    them (its config in meta.cfg, classes, optimizer, message hub, RNG states). Read only."""
    from tool_runner import run_tool

    work = tmp_path_factory.mktemp('tiny_trained')
    # seeded: unseeded, mmengine draws a seed per run, and a test reading this model's scores
    # (thresholds such as test_large_tiff's) would pass or fail with the draw
    run_tool('tools/train.py', REPO / 'tests' / 'configs' / 'cell_r50_tiny.py', '--data-root',
             tiny_root, '--ann-dir', tiny_ann, '--work-dir', work,
             '--cfg-options', 'train_cfg.max_epochs=1', 'randomness.seed=0')
    return work / 'epoch_1.pth'
