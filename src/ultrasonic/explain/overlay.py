"""The Grad-CAM overlay: a heat map in jet colours over the image, with a caption; Pillow and numpy only.

    png = overlay_png(image_uint8, heatmap_0_1, "PNEUMONIA 0.93", class_name="PNEUMONIA")

An all-zero heat map (gradcam's "no region stood out") is not drawn: a flat blue
wash over the image reads as "the model looked nowhere" or as a rendering fault.
The image is shown as it is and the caption's second line says so.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ultrasonic.errors import UltrasonicError

ALPHA = 0.4  # opacity of the heat map over the image
MIN_OVERLAY_SIDE = 256  # overlays are scaled up to this, so the caption is legible


def row_caption(row: dict) -> str:
    """An overlay's caption for a prediction row: "<class> <p>", or the OOD gate's message when it refused
    the image (the row has no class)."""
    from ultrasonic.inference.ood import MESSAGE

    return MESSAGE if row["class"] is None else f"{row['class']} {row['probabilities'][row['class']]:.2f}"


def is_empty(heatmap: np.ndarray) -> bool:
    """True when the map has no signal (all zero): gradcam's "no region stood out"."""
    return not bool(np.any(np.asarray(heatmap) > 0))


def empty_caption(class_name: str | None = None) -> str:
    """The overlay's words for an empty map."""
    return f"no region stood out for {class_name}" if class_name else "no region stood out"


def overlay_png(image: np.ndarray, heatmap: np.ndarray, caption: str, class_name: str | None = None) -> bytes:
    """PNG bytes: the heat map (jet colours, alpha 0.4) over the image, `caption` on a dark box in a corner.

    `image` is uint8 (H, W), (H, W, 1) or (H, W, 3); `heatmap` is (h, w) in [0, 1], resized to
    the image. Small images are scaled up so the shorter side is at least 256 px. An empty map
    (is_empty) leaves the image uncoloured and adds the line "no region stood out for <class_name>".
    """
    rgb = _to_rgb(image)
    height, width = rgb.shape[:2]
    scale = max(1.0, MIN_OVERLAY_SIDE / min(height, width))
    size = (round(width * scale), round(height * scale))
    base = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.float32)
    heat = np.asarray(Image.fromarray(np.clip(np.asarray(heatmap, np.float32), 0, 1), "F")
                      .resize(size, Image.Resampling.BILINEAR))
    if is_empty(heatmap):
        blended, caption = base, f"{caption}\n{empty_caption(class_name)}"
    else:
        blended = (1 - ALPHA) * base + ALPHA * 255 * _jet(np.clip(heat, 0, 1))
    out = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")
    _draw_caption(out, caption)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3)):
        raise UltrasonicError(f"overlay needs a uint8 image (H, W), (H, W, 1) or (H, W, 3); "
                              f"got {image.dtype} {image.shape}")
    if image.ndim == 2 or image.shape[-1] == 1:
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
    return image


def _jet(x: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map (blue -> cyan -> yellow -> red) as (H, W, 3) in [0, 1]."""
    return np.clip(np.stack([1.5 - np.abs(4 * x - c) for c in (3, 2, 1)], axis=-1), 0, 1)


def _draw_caption(img: Image.Image, caption: str) -> None:
    """White text (one or more lines) on a dark translucent box in the top-left corner, sized to the image."""
    draw = ImageDraw.Draw(img, "RGBA")
    margin = max(4, img.height // 64)
    size = max(14, img.height // 16)
    while True:  # smaller type until the longest line fits the width ("no region stood out for ...")
        font = ImageFont.load_default(size=size)
        _, _, right, bottom = draw.multiline_textbbox((2 * margin, 2 * margin), caption, font=font)
        if right + 2 * margin <= img.width or size <= 8:
            break
        size -= 1
    draw.rectangle((margin, margin, right + margin, bottom + margin), fill=(0, 0, 0, 190))
    draw.multiline_text((2 * margin, 2 * margin), caption, font=font, fill=(255, 255, 255, 255))
