# cell_r50_scratch_dense_tta with all eight symmetries of the square as views: the original and its
# quarter turn (cellseg/datasets/transforms/rot90.py), each with the four flips. That makes the
# identity, three rotations and four reflections (flips and both transposes); cells have no
# orientation, so each is as valid a view as the flips. Twice the predictions of the four flips.
_base_ = './cell_r50_scratch_dense_tta.py'

# the turn goes between the resize and the flips: MaskTTAModel unflips, then turns back
tta_pipeline = [
    _base_.tta_pipeline[0],
    dict(type='TestTimeAug',
         transforms=_base_.tta_pipeline[1].transforms[:1]
         + [[dict(type='Rot90', k=0), dict(type='Rot90', k=1)]]
         + _base_.tta_pipeline[1].transforms[1:])]
