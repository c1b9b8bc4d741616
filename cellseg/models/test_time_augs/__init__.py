from cellseg.models.test_time_augs.mask_tta_model import MaskTTAModel

__all__ = ['MaskTTAModel']
