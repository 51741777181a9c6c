"""Predict with an exported model.onnx without ultrasonic: image files in, class probabilities out.

A reference for anyone who deploys the ONNX file in their own code. It reads
files exactly as ultrasonic's `read_image` does (the "input_contract" in the
file's metadata, docs/export.md), so the same file gives the same uint8
pixels and the same probabilities, to the last bit. Needs only Pillow, numpy
and onnxruntime:

    python onnx_reference_reader.py runs/cxr/model.onnx chest1.jpeg chest2.png

prints one JSON line per file: {"file": ..., "probabilities": {class: p}}.
8-bit and 16-bit PNG, JPEG, BMP, TIFF (also GIF, WebP, PPM). Not DICOM: read
it with ultrasonic, or convert it to PNG with the contract's DICOM rules first.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "PPM")  # sniffed from the content, never the name
MAX_PIXELS = 500_000_000  # more is treated as a decompression bomb
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit, 32-bit and float images
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BATCH = 32  # images per ONNX Runtime call, as `ultrasonic predict` batches them

Image.MAX_IMAGE_PIXELS = None  # MAX_PIXELS is checked instead


def read_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """One file -> uint8 (height, width, channels): the contract's steps, in order."""
    with open(path, "rb") as f:
        data = f.read()
    if data[128:132] == b"DICM":
        raise ValueError(f"{path}: DICOM; read it with ultrasonic, or convert it to PNG first")
    img = Image.open(io.BytesIO(data), formats=FORMATS)  # open: the format from the content
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"{path}: {img.width} x {img.height} px is more than {MAX_PIXELS:,} pixels")
    if img.format in ("JPEG", "MPO"):  # jpeg_draft: libjpeg decodes at 1/2, 1/4 or 1/8 scale
        img.draft(img.mode if img.mode in ("L", "RGB") else None, (max(height, width),) * 2)
    img.load()  # decode, then the EXIF orientation
    img = ImageOps.exif_transpose(img)
    img = to_mode(img, "L" if channels == 1 else "RGB")
    if img.size != (width, height):  # resize: stretched, the aspect ratio is not kept
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.uint8)  # tensor
    return x[..., None] if x.ndim == 2 else x


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """The contract's 'channels' step: wide modes by their own range, palettes expanded, alpha dropped."""
    if img.mode in WIDE_MODES:
        img = Image.fromarray(scale_to_uint8(np.asarray(img)))
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ALPHA_MODES:
        img = img.convert("L" if img.mode[0] == "L" else "RGB")
    return img if img.mode == mode else img.convert(mode)


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """rint((x - min) * 255 / (max - min)), over the finite values; a constant image is all 0."""
    array = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = array[finite].min(), array[finite].max()
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (np.where(finite, array, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def predict(model_path: str, files: list[str]) -> list[dict]:
    """One {"file", "probabilities"} per file, in order."""
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    (height, width), channels, classes = meta["image_size"], meta["channels"], meta["classes"]
    rows = []
    for k in range(0, len(files), BATCH):
        chunk = files[k:k + BATCH]
        images = np.stack([read_image(f, height, width, channels) for f in chunk])
        probs = session.run(None, {session.get_inputs()[0].name: images})[0]
        if probs.shape[1] == 1:  # one sigmoid unit: p of classes[1]
            probs = np.concatenate([1 - probs, probs], axis=1)
        rows += [{"file": f, "probabilities": dict(zip(classes, map(float, p)))} for f, p in zip(chunk, probs)]
    return rows


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python onnx_reference_reader.py MODEL.onnx IMAGE [IMAGE ...]")
    for row in predict(sys.argv[1], sys.argv[2:]):
        print(json.dumps(row))
