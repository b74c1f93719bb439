"""Labels as annotation tools export them: COCO JSON, LabelMe JSON, CVAT for images 1.1 XML and Label Studio
JSON, read as they come and rasterised into class-index masks (cached once per version of the annotation file),
and predictions written back as COCO, LabelMe, CVAT and Label Studio files.

- `model`: what every format is read into, and the shared painting rule (order, crowd, ignore, unknown labels)
- `raster`: one rasteriser per shape kind (pycocotools, labelme's `shape_to_mask`, CVAT and Label Studio RLE)
- `coco`, `labelme`, `cvat`, `labelstudio`: the readers, each with its drawing rules in its docstring
- `sources`: splits of an export, class tables, the object checks and the mask cache (`prepare_annotation_cache`)
- `dataset`: `AnnotationDataset`, a split as a dataset
- `tracing`: a predicted mask's objects: regions, holes, polygons, pixels and scores
- `export`: those objects (polygons or exact RLE) -> COCO, LabelMe, CVAT and Label Studio files
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.data.annotations.dataset import AnnotationDataset as AnnotationDataset
    from seglab.data.annotations.model import paint as paint
    from seglab.data.annotations.sources import FORMATS as FORMATS
    from seglab.data.annotations.sources import AnnotationSplit as AnnotationSplit
    from seglab.data.annotations.sources import MaskCache as MaskCache
    from seglab.data.annotations.sources import MaskRules as MaskRules
    from seglab.data.annotations.sources import cache_dir as cache_dir
    from seglab.data.annotations.sources import check_image as check_image
    from seglab.data.annotations.sources import class_table as class_table
    from seglab.data.annotations.sources import prepare_annotation_cache as prepare_annotation_cache

_EXPORTS = {
    "AnnotationDataset": "dataset",
    "AnnotationSplit": "sources", "FORMATS": "sources", "MaskCache": "sources", "MaskRules": "sources",
    "cache_dir": "sources", "check_image": "sources", "class_table": "sources",
    "prepare_annotation_cache": "sources",
    "paint": "model",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
