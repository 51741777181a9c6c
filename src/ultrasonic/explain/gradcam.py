"""Grad-CAM: where in the image the model found the evidence for a class (Selvaraju et al. 2017).

For a target convolutional layer with feature maps A_k, the weight of map k is
the mean over (h, w) of d(class logit)/dA_k; the heat map is
ReLU(sum_k w_k A_k + b), bilinearly upsampled to the input and scaled to [0, 1].
The gradient is the only backend-specific step (gradients.py).

The baseline b (binary models): plain Grad-CAM (b = 0) measures each cell's
push on the logit against an image with no features at all. Measured on a
2-epoch 64 px chest X-ray model, sum_k w_k A_k was negative in every cell of
every image for PNEUMONIA (p up to 1.00): every region of every X-ray looks
more normal than "nothing", and the positive logit is carried by the bias and
the non-linear rest of the network. The ReLU then left PNEUMONIA an all-zero
(flat blue) map and NORMAL a red one, whatever the image. So b spreads what
the linear term leaves out evenly over the cells: the map of the decided class
then sums to its decision margin (its logit minus the logit at the threshold),
and the cells that pushed hardest toward the class stand out. A shift by a
constant keeps the peak where it was: pointing games are unchanged by it.

A map with nothing in it is returned all zero (is_empty): no cell pushed
toward the class, or every cell pushed about the same (the weakest at 99 % of
the peak or more); the overlay then says so instead of showing an empty colour
wash. (A rule that also emptied maps red over more than 90 % of the image was
tried and dropped: it emptied most maps of a GroupNorm network that points at
the lesion, pointing game 0.11 with it, 0.91 without.)

    maps = gradcam(model, images_uint8, threshold=0.55)    # (N, H, W) in [0, 1]
    is_empty(maps[0])                                      # True: no region stood out
    png = overlay_png(images_uint8[0], maps[0], "PNEUMONIA 0.93")
    rows = explain_files(Predictor("runs/cxr"), ["scans/"], "cams/")
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import keras
import numpy as np
from PIL import Image

from ultrasonic.atomic import write_bytes
from ultrasonic.data.files import expand_paths
from ultrasonic.errors import RunError, UltrasonicError
from ultrasonic.explain.gradients import conv_output_grad_and_score
from ultrasonic.explain.overlay import is_empty, overlay_png, row_caption
from ultrasonic.models.build import TEMPERATURE

BATCH = 32  # images per gradient call: bounds memory on big inputs
NO_SIGNAL = 1e-6  # a map whose positive peak is below this share of its largest |value| has no signal
UNIFORM = 0.99  # a map whose weakest cell is at least this share of its peak singles out no region


def last_conv_layer(model: keras.Model) -> str:
    """Name of the last Conv2D layer (with a 4-D output), searched from the model's end."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Conv2D) and len(layer.output.shape) == 4:
            return layer.name
    raise RunError(f"model {model.name!r} has no Conv2D layer; Grad-CAM needs a convolutional network")


def gradcam(model: keras.Model, images: np.ndarray, class_index: int | None = None,
            layer: str | None = None, threshold: float | None = None) -> np.ndarray:
    """(N, H, W) float32 heat maps in [0, 1] for uint8 images (N, H, W, C) as the model takes them.

    class_index None explains the predicted class (the positive class of a 1-unit sigmoid
    model); 0 on a sigmoid model explains the negative class. layer None: default_target_layer.
    threshold: the run's decision threshold on the positive class's probability (None: 0.5),
    the baseline of a 1-unit model's maps (module docstring). An all-zero map: no region stood out.
    """
    images = _check_images(model, images)
    _check_class_index(model, class_index)
    _check_threshold(threshold)
    layer = layer or default_target_layer(model)
    _check_layer(model, layer)
    if len(images) == 0:
        return np.zeros((0, *images.shape[1:3]), np.float32)
    cams = np.concatenate([_decision_cam(model, images[k:k + BATCH], layer, class_index, threshold)
                           for k in range(0, len(images), BATCH)])
    maps = np.stack([_upsample_unit(cam, images.shape[1:3]) for cam in cams])
    maps[maps.min(axis=(1, 2)) >= UNIFORM] = 0.0  # the same push everywhere says nothing: empty
    return maps


def _decision_cam(model: keras.Model, images: np.ndarray, layer: str, class_index: int | None,
                  threshold: float | None) -> np.ndarray:
    """(n, h, w) maps at the target layer, with the decision-margin baseline on a 1-unit model."""
    fmap, grads, scores = conv_output_grad_and_score(model, images, layer, class_index)
    if model.outputs[0].shape[-1] != 1:
        return _cam(fmap, grads)  # softmax: the arg-max decision has no threshold to measure from
    raw = _weighted(fmap, grads)
    cells = raw.shape[1] * raw.shape[2]
    at_threshold = _logit_at(model, 0.5 if threshold is None else threshold)
    margin = scores - (-at_threshold if class_index == 0 else at_threshold)
    return _cam(fmap, grads, offset=(margin - raw.sum(axis=(1, 2))) / cells)


SATURATED = 6e-8  # float32's sigmoid is exactly 1.0 above a logit of about 16.6: 1 - 6e-8 is as close as it gets


def _logit_at(model: keras.Model, threshold: float) -> float:
    """The logit (before the temperature layer, as the gradient is taken) where p = threshold."""
    try:
        temperature = 1.0 / float(model.get_layer(TEMPERATURE).scale)
    except ValueError:  # an older network without the layer: its logits are the Dense's, T = 1
        temperature = 1.0
    # a run's threshold can be 0 or 1 (a model whose float32 probabilities saturate, e.g. "p >= 1.0"): the
    # margin is then measured from the logit where float32 saturates, about +/-16.6
    threshold = min(max(threshold, SATURATED), 1.0 - SATURATED)
    return temperature * float(np.log(threshold / (1.0 - threshold)))


def default_target_layer(model: keras.Model) -> str:
    """The output of the last down-sampling step (pooling or strided conv block) at >= 1/8 of the input.

    Why not the last conv layer: both project networks end at 1/16 of the input
    (4 x 4 cells at 64 px), too coarse to point at a small lesion, and their
    receptive field there covers the whole image. Measured on synthetic lesions
    (docs/explain.md): pointing game 0.00-0.31 at the last conv layer, 0.46-1.00
    at the last block at 1/8, 0.91-1.00 at the 1/8 stage output chosen here.
    Falls back to last_conv_layer when the network never down-samples.
    """
    height = model.inputs[0].shape[1]
    chosen, seen_conv = None, False
    for layer in model.layers:
        seen_conv = seen_conv or isinstance(layer, keras.layers.Conv2D)
        shape = layer.output.shape
        if not seen_conv or len(shape) != 4 or not height or not shape[1] or shape[1] * 8 < height:
            continue
        if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            chosen = layer.name
        elif isinstance(layer, keras.layers.Conv2D) and max(layer.strides) > 1:
            chosen = _block_output(model, layer)
    return chosen or last_conv_layer(model)


def _block_output(model: keras.Model, conv) -> str:
    """The strided conv's block output: the norm and activation layers that directly follow it."""
    name = conv.name
    for layer in model.layers[model.layers.index(conv) + 1:]:
        follows = layer.input is model.get_layer(name).output
        if not follows or not isinstance(layer, (keras.layers.ReLU, keras.layers.Activation,
                                                 keras.layers.BatchNormalization, keras.layers.GroupNormalization,
                                                 keras.layers.LayerNormalization)):
            break
        name = layer.name
    return name


def _weighted(fmap: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """sum_k w_k A_k with w_k the spatial mean of the gradient; (N, h, w)."""
    return np.einsum("nhwk,nk->nhw", fmap, grads.mean(axis=(1, 2)))


def _cam(fmap: np.ndarray, grads: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """ReLU(sum_k w_k A_k + offset_n); (N, h, w). A map whose positive peak is rounding noise
    (below NO_SIGNAL of its largest |value|) is set to zero: it has no signal."""
    raw = _weighted(fmap, grads)
    if offset is not None:
        raw = raw + np.asarray(offset, raw.dtype)[:, None, None]
    cam = np.maximum(raw, 0.0)
    noise = cam.max(axis=(1, 2)) <= NO_SIGNAL * np.abs(raw).max(axis=(1, 2))
    cam[noise] = 0.0
    return cam


def _upsample_unit(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling to (H, W), then scaled so the peak is 1 (an all-zero map stays zero)."""
    height, width = size
    up = np.asarray(Image.fromarray(cam.astype(np.float32), "F").resize((width, height), Image.Resampling.BILINEAR))
    peak = float(up.max())
    return (up / peak if peak > 0 else np.zeros_like(up)).astype(np.float32)


def _check_images(model: keras.Model, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    expected = tuple(model.inputs[0].shape[1:])
    if images.ndim != 4 or any(e is not None and e != s for e, s in zip(expected, images.shape[1:])):
        raise UltrasonicError(f"images have shape {images.shape}; "
                              f"this model takes (N, {', '.join(map(str, expected))})")
    if images.dtype != np.uint8:
        raise UltrasonicError(f"images have dtype {images.dtype}; the model takes uint8 images (0-255)")
    return images


def _check_class_index(model: keras.Model, class_index: int | None) -> None:
    units = model.outputs[0].shape[-1]
    n_classes = 2 if units == 1 else units
    if class_index is not None and not 0 <= class_index < n_classes:
        raise UltrasonicError(f"class_index {class_index} is out of range: the model has {n_classes} classes")


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UltrasonicError(f"threshold {threshold!r} is not a probability between 0 and 1; "
                              "give the run's decision threshold (meta.json \"threshold\")")


def _check_layer(model: keras.Model, layer: str) -> None:
    try:
        shape = model.get_layer(layer).output.shape
    except ValueError as exc:
        raise RunError(f"model {model.name!r} has no layer {layer!r}; its layers with 4-D outputs are: "
                       f"{', '.join(_spatial_layers(model))}") from exc
    if len(shape) != 4:
        raise RunError(f"layer {layer!r} has output shape {tuple(shape)}; Grad-CAM needs a 4-D feature map, e.g. "
                       f"one of: {', '.join(_spatial_layers(model))}")


def _spatial_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers[1:] if len(layer.output.shape) == 4]


def explain_files(predictor, paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                  layer: str | None = None) -> list[dict]:
    """Predict and explain image files and folders; writes <out_dir>/<stem>_cam.png per image.

    Returns the rows of Predictor.predict_files, each with "cam" (the PNG's path); an
    unreadable file gives a row with "error" instead. The heat map explains the class in
    the row (the decided class, at the run's threshold), named with its probability; a map
    with nothing in it says "no region stood out for <class>" and its row has heatmap_empty true.
    """
    files, out_dir = expand_paths(paths), Path(out_dir)
    names = _cam_names(files)
    rows = []
    for k in range(0, len(files), BATCH):
        chunk = [str(f) for f in files[k:k + BATCH]]
        rows += _explain_chunk(predictor, chunk, [out_dir / names[k + i] for i in range(len(chunk))], layer)
    return rows


def _explain_chunk(predictor, chunk: list[str], targets: list[Path], layer: str | None) -> list[dict]:
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:  # decoders run in C, as in predict
        decoded = list(pool.map(predictor.try_read, chunk))  # a bad file is its row's error (data/contain.py)
    rows = predictor.rows_of(chunk, decoded)
    good = [i for i, d in enumerate(decoded) if d.error is None]
    threshold = unit_threshold(predictor)
    for class_name in {rows[i]["class"] for i in good} - {None}:  # None: not like the training images, no class
        picked = [i for i in good if rows[i]["class"] == class_name]
        maps = gradcam(predictor.model, np.stack([decoded[i].image for i in picked]),
                       predictor.classes.index(class_name), layer, threshold)
        for i, heat in zip(picked, maps):
            caption = f"{class_name} {rows[i]['probabilities'][class_name]:.2f}"
            write_bytes(targets[i], overlay_png(decoded[i].image, heat, caption, class_name=class_name))
            rows[i]["cam"], rows[i]["heatmap_empty"] = str(targets[i]), is_empty(heat)
    return rows


def predicted_overlay(predictor, image: np.ndarray, row: dict, decided: str) -> tuple[bytes, bool]:
    """The overlay PNG of one predicted image and whether its map is empty, made as `explain` makes it: the map
    of `decided` (the class the model leant to, before the OOD gate) against the run's threshold, captioned
    with row_caption. The service and `ultrasonic pacs` share it, so their heat maps are explain's."""
    heat = gradcam(predictor.model, image[None], predictor.classes.index(decided), threshold=unit_threshold(predictor))
    return overlay_png(image, heat[0], row_caption(row), class_name=decided), is_empty(heat[0])


def unit_threshold(predictor) -> float | None:
    """The run's threshold as gradcam takes it: on the probability of the model's unit (class 1); None
    for more than two classes (an arg-max decision)."""
    if len(predictor.classes) != 2:
        return None
    if predictor.classes.index(predictor.positive_class) == 1:
        return predictor.threshold
    return 1.0 - predictor.threshold


def _cam_names(files: list[Path]) -> list[str]:
    """<stem>_cam.png per file; a name already taken (a/x.png and b/x.png) gets _2, _3..."""
    used: set[str] = set()
    names = []
    for f in files:
        name, n = f"{f.stem}_cam.png", 1
        while name in used:
            n += 1
            name = f"{f.stem}_{n}_cam.png"
        used.add(name)
        names.append(name)
    return names
