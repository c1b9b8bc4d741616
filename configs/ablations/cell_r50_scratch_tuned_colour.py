# Lever of issue 28 (screened by benchmarks/accuracy.py against cell_r50_scratch_tuned): the tuned
# recipe with colour augmentation for H&E in the spirit of HoVer-Net's (which varies brightness,
# contrast, saturation and hue, and blurs), built from mmdet's own colour transforms.
# Why these transforms and values:
# - mmdet's Brightness, Contrast and Color (saturation) each blend the image with black, its mean
#   grey or its grey version by a factor drawn uniformly between min_mag and max_mag (mmdet
#   rounds it to 0.1). HoVer-Net's ranges: brightness +-26 of 255 (about +-10%, so 0.9-1.1),
#   linear contrast 0.75-1.25, saturation 0.8-1.2. HoVer-Net applies every one to every image
#   (prob 1.0), so these do too.
# - No hue: mmdet's only hue transform, PhotoMetricDistortion, also swaps the colour channels of
#   half the images, which turns H&E's purple and pink into other stains; HoVer-Net's hue shift
#   is small (+-8 of 255, about +-11 degrees).
# - No blur: mmdet's blurs come through its Albu wrapper, and albumentations is not installed.
# - After the flips, before packing, so the geometric transforms see the loaded uint8 image.
_base_ = '../cell_r50_scratch_tuned.py'

colour_transforms = [
    dict(type='Brightness', prob=1.0, min_mag=0.9, max_mag=1.1),
    dict(type='Contrast', prob=1.0, min_mag=0.75, max_mag=1.25),
    dict(type='Color', prob=1.0, min_mag=0.8, max_mag=1.2),
]
train_pipeline = _base_.train_pipeline[:-1] + colour_transforms + _base_.train_pipeline[-1:]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
