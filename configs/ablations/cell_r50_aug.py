# Augmentation on: the original study's flips, rotation and colour jitter, through mmdet's own
# transforms, on top of cell_r50's native-resolution pipeline.
_base_ = '../cell_r50.py'

# the recipe's pipeline (load, crop images over 1024 px, filter), augmented before packing
train_pipeline = _base_.train_pipeline[:-1] + [
    # cells have no up or down: horizontal, vertical and both flips (= 180 degree rotation)
    dict(type='RandomFlip', prob=[0.25, 0.25, 0.25],
         direction=['horizontal', 'vertical', 'diagonal']),
    # up to 30 degrees: boxes are rotated corners, so larger angles would inflate them
    dict(type='Rotate', prob=0.5, max_mag=30.0, img_border_value=(128, 128, 128)),
    # stain variation between slides
    dict(type='PhotoMetricDistortion', brightness_delta=24, contrast_range=(0.75, 1.25),
         saturation_range=(0.75, 1.25), hue_delta=10),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
