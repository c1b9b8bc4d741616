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
