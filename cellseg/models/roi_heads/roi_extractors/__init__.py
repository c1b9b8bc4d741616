from cellseg.models.roi_heads.roi_extractors.float32_roi_extractor import Float32RoIExtractor

__all__ = ['Float32RoIExtractor']
