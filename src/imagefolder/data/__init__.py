"""Images on disk and the built-in picture set."""
from .builtin import CLASS_NAMES, builtin_images, builtin_names, write_builtin_images
from .folder import (BadItem, Batch, ImageFolderDataset, TensorImageDataset, collate_codes, collate_skip_bad,
                     find_classes, split_dir)
from .images import (IMAGE_EXTENSIONS, ImageError, ImageFiles, center_crop_arr, find_images, load_image, load_rgb,
                     to_tensor)

__all__ = [
    "BadItem", "Batch", "ImageFolderDataset", "TensorImageDataset", "collate_codes", "collate_skip_bad",
    "find_classes", "split_dir",
    "CLASS_NAMES", "IMAGE_EXTENSIONS", "ImageError", "ImageFiles", "builtin_images", "builtin_names",
    "center_crop_arr", "find_images", "load_image", "load_rgb", "to_tensor", "write_builtin_images",
]
