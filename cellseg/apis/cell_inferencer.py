"""mmdet's ``DetInferencer`` for cellseg models: images read by cellseg's rule, masks as
``CropMasks``."""
from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from mmcv.transforms import Compose
from mmdet.apis import DetInferencer
from mmdet.utils import get_test_pipeline_cfg

from cellseg.formats.images import PERCENTILES, read_image
from cellseg.structures.crop_masks import CropMasks


class CellInferencer(DetInferencer):
    """``DetInferencer`` (its ``__call__``: inputs listed, chunked into batches, collated,
    ``forward``, ``visualize``, ``postprocess``) for a model ``cellseg.apis.predict.load_model``
    loaded.

    What differs from the parent:

    - it wraps a loaded model rather than loading one: ``load_model`` reads the checkpoint safely
      and its saved config as data, sizes the heads to its classes and sets the score threshold
      and mixed precision, where the parent's constructor would execute the saved config;
    - inputs are image files (or HxWx3 RGB arrays) read by ``cellseg.formats.images.read_image``
      with the percentiles the model was trained with, then the config's test pipeline from its
      second transform on, as ``inference_detector`` feeds an array;
    - ``forward`` runs under the model's autocast (``load_model(amp=True)``);
    - ``visualize`` hands on the RGB images read and ``postprocess`` returns, per image, that
      image and the detections scoring at least ``score_thr`` (masks as ``CropMasks``, 0-based
      labels, scores); what is written from them (label and class TIFFs, overlay, GeoJSON, CSV
      rows) is ``cellseg.apis.predict``'s, and no mmdet picture or JSON is written.
    """

    postprocess_kwargs = DetInferencer.postprocess_kwargs | {'score_thr'}

    def __init__(self, model: torch.nn.Module, batch_size: int = 1) -> None:
        self.scope = 'mmdet'
        self.palette = 'none'
        self.num_visualized_imgs = self.num_predicted_imgs = 0
        self.model = model
        self.cfg = model.cfg
        self.pipeline = self._init_pipeline(self.cfg)
        self.collate_fn = self._init_collate(self.cfg)
        self.visualizer = None
        self.show_progress = False
        self.batch_size = batch_size

    @classmethod
    def of(cls, model: torch.nn.Module) -> CellInferencer:
        """The inferencer of ``model`` (made once per model)."""
        inferencer = model.__dict__.get('_cell_inferencer')
        if inferencer is None:
            inferencer = model.__dict__['_cell_inferencer'] = cls(model)
        return inferencer

    def _init_pipeline(self, cfg) -> Compose:
        pipeline = copy.deepcopy(get_test_pipeline_cfg(cfg))
        pipeline[0] = dict(type='mmdet.LoadImageFromNDArray')  # images come read by read_image
        return Compose(pipeline)

    def _inputs_to_list(self, inputs) -> list:
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    def _get_chunk_data(self, inputs: Iterable, chunk_size: int) -> Iterator[list]:
        percentiles = getattr(self.model, 'image_percentiles', PERCENTILES)
        chunk = []
        for item in inputs:
            rgb = (item if isinstance(item, np.ndarray)
                   else read_image(os.fspath(item), percentiles=percentiles))
            # mmdet's pipeline expects BGR as OpenCV decodes it
            chunk.append((rgb, self.pipeline(dict(img=np.ascontiguousarray(rgb[..., ::-1]),
                                                  img_id=0))))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @torch.no_grad()
    def forward(self, inputs: dict, **kwargs) -> list:
        dtype = getattr(self.model, 'autocast_dtype', None)
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            return self.model.test_step(inputs)

    def visualize(self, inputs: list, preds, **kwargs) -> list[np.ndarray]:
        """The RGB images read: cellseg draws its overlays on them after painting the label
        image (``CellLocalVisualizer.draw_label_image``), not mmdet's box-and-mask pictures."""
        return inputs

    def postprocess(self, preds: Sequence, visualization: list[np.ndarray],
                    return_datasamples: bool = False, print_result: bool = False,
                    no_save_pred: bool = True, pred_out_dir: str = '', score_thr: float = 0.0,
                    **kwargs) -> dict:
        images = visualization
        out = []
        for image, pred in zip(images, preds):
            inst = pred.pred_instances
            scores = inst.scores.detach().cpu().numpy().astype(np.float32)
            keep = np.flatnonzero(scores >= score_thr)
            # (N, H, W) bool from MaskRCNN, COCO RLEs from the chunked mask head and tiling
            masks = inst.masks
            kept = (masks[torch.from_numpy(keep).to(masks.device)]
                    if isinstance(masks, torch.Tensor) else [masks[i] for i in keep])
            out.append(dict(image=image, masks=CropMasks.from_masks(kept, *image.shape[:2]),
                            labels=inst.labels.detach().cpu().numpy().astype(np.int64)[keep],
                            scores=scores[keep]))
        return dict(predictions=out, visualization=None)

    def __call__(self, inputs, batch_size: int | None = None, **kwargs) -> dict:
        """``DetInferencer.__call__`` with this inferencer's batch size; keyword arguments as
        the parent's, plus ``score_thr`` (what ``postprocess`` keeps)."""
        return super().__call__(inputs, batch_size=batch_size or self.batch_size, **kwargs)
