from cellseg.datasets.transforms.load_cell_annotations import LoadCellAnnotations
from cellseg.datasets.transforms.load_cell_image_from_file import LoadCellImageFromFile

__all__ = ['LoadCellAnnotations', 'LoadCellImageFromFile']
