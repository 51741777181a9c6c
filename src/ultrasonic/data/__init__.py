"""Data: decode (io), discover (sources), split, cache and batch images."""

from ultrasonic.lazy import lazy_exports

__all__ = ["read_image", "open_data", "load_images", "load_dataset", "ArrayBatches", "encode_labels",
           "class_weights", "iter_paths", "expand_paths", "lesion_images", "SPLITS"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "read_image": ".io", "open_data": ".sources", "load_images": ".cache", "load_dataset": ".dataset",
    "ArrayBatches": ".batches", "encode_labels": ".batches", "class_weights": ".batches",
    "iter_paths": ".files", "expand_paths": ".files", "lesion_images": ".synthetic", "SPLITS": ".split",
})
