"""Pictures: the visualizer of instance overlays (registered in mmdet's VISUALIZERS), PR curves,
confusion matrices, galleries and training curves."""
from cellseg.visualization.cell_local_visualizer import CellLocalVisualizer

__all__ = ['CellLocalVisualizer']
