"""File formats: the HW3 data layout with its test id map (``hw3``), its conversion to COCO
(``coco_conversion``), the CodaBench submission (``submission``). They import only ``structures``
and ``utils`` of cellseg."""
