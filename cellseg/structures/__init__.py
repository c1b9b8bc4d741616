"""Data structures: cellseg's one instance-mask type (``crop_masks.CropMasks``), one image's
detections (``detections``), the one COCO RLE codec (``rle``) and the label images of the one
painter (``label_images``, ``sparse_labels``). They import nothing of cellseg but ``utils``."""
