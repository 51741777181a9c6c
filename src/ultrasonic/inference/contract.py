"""The input contract of an exported model: how to turn an image file into its input tensor.

An ONNX file alone says "uint8 (N, H, W, C)"; a reader that only converts to
grey and resizes bilinearly gets pixels that differ from ultrasonic's, and
probabilities that differ (by up to 0.08, reported for a trained model). The
contract spells out every step of
`data.io.read_image` (JPEG draft decoding, EXIF rotation, mode conversion,
16-bit scaling, the resize that ignores the aspect ratio), so the same file
gives the same pixels and the same probabilities. It travels in the ONNX
metadata (key "input_contract", JSON) and the sidecar JSON; docs/export.md
explains it, and docs/onnx_reference_reader.py implements it with Pillow,
numpy and ONNX Runtime alone.

    contract = input_contract(meta, "image", OUTPUT_NAME)   # what an ONNX export carries, JSON-encoded
"""

from __future__ import annotations

import PIL

from ultrasonic.data.io import MAX_PIXELS, PIL_FORMATS
from ultrasonic.rundir import RunMeta

CONTRACT_VERSION = 1
OUTPUT_NAME = "probabilities"
REFERENCE_READER = "docs/onnx_reference_reader.py"


def input_contract(meta: RunMeta, input_name: str | None = None, output_name: str | None = None) -> dict:
    """The contract of the run whose meta.json is `meta`; tensor names left out where None."""
    height, width = meta.image_size
    channels = int(meta.channels)
    mode = "L" if channels == 1 else "RGB"
    units = 1 if len(meta.classes) == 2 else len(meta.classes)
    tensor = {"name": input_name, "dtype": "uint8", "shape": [None, height, width, channels], "layout": "NHWC",
              "values": "raw pixels 0-255; the model normalises itself"}
    output = {"name": output_name, "shape": [None, units],
              "values": "two classes: one sigmoid unit, p of classes[1]; more: softmax over the classes"}
    return {
        "version": CONTRACT_VERSION,
        "tensor": {k: v for k, v in tensor.items() if v is not None},
        "output": {k: v for k, v in output.items() if v is not None},
        "steps": _steps(height, width, mode),
        "dicom": "DICOM files (b'DICM' at byte 128, or a data set without the preamble) are decoded by ultrasonic "
                 "(data/dicom.py): first frame, Modality LUT or Rescale Slope/Intercept, VOI LUT or Window "
                 "Center/Width (else the pixels' min-max), MONOCHROME1 inverted, rounded to 8 bits; then steps "
                 "'channels' and 'resize'. The reference reader does not read DICOM: use ultrasonic's read_image, "
                 "or convert to 8-bit PNG with these rules first.",
        "decoder": f"Pillow (exported with {PIL.__version__}); the steps name its calls",
        "reference_reader": REFERENCE_READER,
    }


def _steps(height: int, width: int, mode: str) -> list[dict]:
    longest = max(height, width)
    return [
        {"step": "open", "rule": f"sniff the format from the content, never the file name: "
                                 f"PIL.Image.open(file, formats={list(PIL_FORMATS)}); refuse more than "
                                 f"{MAX_PIXELS:,} pixels (width x height) before decoding"},
        {"step": "jpeg_draft", "rule": f"JPEG only, before decoding: img.draft(img.mode if img.mode in ('L', 'RGB') "
                                       f"else None, ({longest}, {longest})): libjpeg decodes at 1/s scale, s the "
                                       f"largest of 8, 4, 2, 1 with s <= min(W // {longest}, H // {longest}) "
                                       "for a W x H file, giving ceil(W / s) x ceil(H / s) pixels"},
        {"step": "decode", "rule": "img.load(), then PIL.ImageOps.exif_transpose(img): the EXIF Orientation applied"},
        {"step": "channels", "rule": "modes I, I;16, I;16B, I;16L, I;16N, F (16-bit, 32-bit, float): scaled by "
                                     "their own range, rint((x - min) * 255 / (max - min)) clipped to 0-255 "
                                     "(non-finite values count as the minimum; a constant image is all 0), as "
                                     "mode L; mode P: convert('RGBA') if it has a transparency entry, else "
                                     "convert('RGB'); alpha dropped, not composited: RGBA, RGBa, PA -> "
                                     f"convert('RGB'), LA, La -> convert('L'); then convert('{mode}') unless "
                                     f"already {mode} (L from RGB is Pillow's ITU-R 601-2 luma)"},
        {"step": "resize", "rule": f"unless already {width} x {height}: img.resize(({width}, {height}), "
                                   "PIL.Image.Resampling.BILINEAR), Pillow's bilinear filter (it widens with "
                                   "the reduction, i.e. antialiased); the aspect ratio is NOT kept: no crop, "
                                   "no padding, the image is stretched"},
        {"step": "tensor", "rule": f"numpy.asarray(img, dtype=uint8) -> ({height}, {width}) or ({height}, "
                                   f"{width}, 3); add the channel axis for L; stack N images -> (N, {height}, "
                                   f"{width}, {1 if mode == 'L' else 3})"},
    ]
