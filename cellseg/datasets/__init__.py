"""The dataset and its transforms (importing this registers them)."""
from cellseg.datasets.cell_dataset import CellDataset
from cellseg.datasets.transforms import LoadCellAnnotations, LoadCellImageFromFile, Rot90

__all__ = ['CellDataset', 'LoadCellAnnotations', 'LoadCellImageFromFile', 'Rot90']
