"""Labels as annotation tools export them: COCO JSON, LabelMe JSON, CVAT for images 1.1 XML and Label Studio
JSON, read as they come and rasterised into class-index masks (cached once per version of the annotation file),
and predictions written back as COCO / LabelMe files.

- `model`: what every format is read into, and the shared painting rule (order, crowd, ignore, unknown labels)
- `raster`: one rasteriser per shape kind (pycocotools, labelme's `shape_to_mask`, CVAT and Label Studio RLE)
- `coco`, `labelme`, `cvat`, `labelstudio`: the readers, each with its drawing rules in its docstring
- `sources`: splits of an export, class tables, the object checks and the mask cache (`prepare_annotation_cache`)
- `dataset`: `AnnotationDataset`, a split as a dataset
- `export`: predicted masks -> polygons / RLE -> COCO and LabelMe files
"""

from __future__ import annotations

from seglab.lazy import lazy_exports

_EXPORTS = {
    "AnnotationDataset": "dataset",
    "AnnotationSplit": "sources", "FORMATS": "sources", "MaskCache": "sources", "MaskRules": "sources",
    "cache_dir": "sources", "check_image": "sources", "class_table": "sources",
    "prepare_annotation_cache": "sources",
    "paint": "model",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
