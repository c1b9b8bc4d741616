from cellseg.datasets.transforms.load_cell_annotations import LoadCellAnnotations
from cellseg.datasets.transforms.load_cell_image_from_file import LoadCellImageFromFile
from cellseg.datasets.transforms.rot90 import Rot90

__all__ = ['LoadCellAnnotations', 'LoadCellImageFromFile', 'Rot90']
