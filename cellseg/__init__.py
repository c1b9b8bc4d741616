"""cellseg: Mask R-CNN for cell instance segmentation on MMDetection 3.x.

Importing the package is cheap; configs load the registered modules through ``custom_imports``.
"""
__version__ = '0.1.0'
