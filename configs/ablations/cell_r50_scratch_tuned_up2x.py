# Lever of issue 28 (screened by benchmarks/accuracy.py against cell_r50_scratch_tuned): the tuned
# recipe on images upsampled 2x, in training and at test time.
# Why: CoNSeP's cells are small (median box 16.5 px, p5 7.7 px; configs/cell_r50_scratch_dense.py),
# so a nucleus covers about four positions of the finest (stride-4) feature map and its 28x28
# mask target is cut from ~16 px. At 2x the same nucleus has four times the feature positions.
# How: mmdet's Resize with scale_factor 2.0 and keep_ratio (bilinear for the image, masks and
# boxes scaled with it). At test time the same Resize records scale_factor 2 in the image's
# metadata, and the heads (ChunkedMaskHead, TiledMaskRCNN's rescale) map boxes and masks back to
# the original image by it, so predictions and evaluation stay at the original resolution.
# - In training the resize comes before RandomCrop, so the crop still bounds a training image
#   at 1024 px (512 px of an original over 1024 px); CoNSeP's 256 px patches become 512 px whole.
# - The anchors stay the tuned recipe's (8-256 px in half-octave steps): doubled, CoNSeP's boxes
#   (p1 9 px, p99 89 px) stay inside their range.
# - Tiling (tile_cfg.size 512) applies to the upsampled image: a 256 px CoNSeP patch becomes
#   512 px and is still predicted whole.
# Cost: four times the pixels in every forward and backward pass of the backbone and FPN (the
# RoI counts are unchanged), so a step takes longer: the training minutes of the screen say how
# much.
_base_ = '../cell_r50_scratch_tuned.py'

upsample = dict(type='Resize', scale_factor=2.0, keep_ratio=True)
# the recipe's pipeline with the resize after the annotations are loaded, before the crop
train_pipeline = _base_.train_pipeline[:2] + [upsample] + _base_.train_pipeline[2:]
# the recipe's test pipeline, whose no-op Resize (scale_factor 1.0) becomes the upsampling
test_pipeline = [upsample if t['type'] == 'Resize' else t for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
