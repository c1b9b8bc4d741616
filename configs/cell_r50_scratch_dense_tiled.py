# cell_r50_scratch_dense predicting large images in overlapping tiles
# (cellseg/models/detectors/tiled_mask_rcnn.py).
# Same weights as cell_r50_scratch_dense: test its checkpoint with this config. `tile_cfg=None` in
# --cfg-options predicts every image whole again.
_base_ = './cell_r50_scratch_dense.py'

model = dict(
    type='TiledMaskRCNN',
    tile_cfg=dict(
        # 512 px: training sees up to 1024 px crops, so a tile is well inside what the model
        # knows, and a batch of 4 tiles holds the backbone activations of 1 Mpx where a whole
        # 2500x2000 image holds 5 Mpx (on a CPU, 1000 detections: 1.34 GiB peak tiled, 2.38 GiB
        # whole; docs/speed.md).
        size=512,
        # above the longest cell box in CoNSeP (106 px; p99.9 80) plus border_margin, so a cell
        # cut by one tile's border lies whole in its neighbour (tools/anchor_stats.py prints it;
        # rerun it on the HW3 train set and keep this above its maximum)
        overlap=128,
        # box regression puts the edge of a cut cell's box within a pixel or two of the border
        border_margin=2,
        # a cut piece lies inside its whole cell: intersection over the smaller mask >= 0.5
        # makes them one cell, while neighbouring cells overlap far less
        merge_thr=0.5,
        batch_size=4))
