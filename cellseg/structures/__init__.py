"""Data structures: the one COCO RLE codec (``rle``), instance masks as crops (``mask_crops``),
and masks as coordinates (``sparse_masks``). They import nothing of cellseg but ``utils``."""
