"""Images in: files and encoded bytes read as 8-bit BGR frames (reading), each checked for its size on its
header before it is decoded (header)."""

from facefleet.vision.images.reading import (
    ImageMissingError,
    NoImagesError,
    decode_image,
    image_files,
    list_images,
    read_image,
    to_bgr8,
)

__all__ = [
    "ImageMissingError",
    "NoImagesError",
    "decode_image",
    "image_files",
    "list_images",
    "read_image",
    "to_bgr8",
]
