"""The one backend-specific piece of Grad-CAM: a feature map and the gradient of a class score on it.

The model is cut at the target layer into `features` (image -> feature map A)
and `head` (A -> class logits), so the gradient is taken with respect to A
itself: TensorFlow watches A on a GradientTape, JAX differentiates the head's
stateless call. Both run with training=False (no augmentation, no dropout,
moving statistics). The score is the class *logit* (pre-sigmoid/softmax,
before the temperature, which only scales it): a saturated probability
(p = 1.0 in float32) would give an all-zero gradient.

    a, grads = conv_output_and_grad(model, images_uint8, "s3b_relu", class_index=None)
    a, grads, scores = conv_output_grad_and_score(model, images_uint8, "s3b_relu", class_index=1)
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import ops

from ultrasonic.errors import UltrasonicError
from ultrasonic.models.build import LOGITS

BACKENDS = ("tensorflow", "jax")
# model -> {layer: (features, head, dense)}; an entry goes when its model is garbage-collected.
_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def conv_output_and_grad(model: keras.Model, images: np.ndarray, layer: str,
                         class_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(A, dScore/dA), both (N, h, w, k) float32, for uint8 images (N, H, W, C).

    class_index None: the positive class of a 1-unit sigmoid model, the arg-max class of a
    softmax model. class_index 0 on a sigmoid model explains the negative class (-logit).
    """
    return conv_output_grad_and_score(model, images, layer, class_index)[:2]


def conv_output_grad_and_score(model: keras.Model, images: np.ndarray, layer: str,
                               class_index: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, dScore/dA, Score): as conv_output_and_grad, plus each image's score (N,), the logit that was
    differentiated (-logit for class 0 of a sigmoid model), so a caller can relate the map to the decision."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise UltrasonicError(f"Grad-CAM supports the {' and '.join(BACKENDS)} backends, not {backend!r}; "
                              "set KERAS_BACKEND=tensorflow (or jax)")
    features, head, dense = _split(model, layer)
    fmap = features(images, training=False)
    gradient = _tf_gradient if backend == "tensorflow" else _jax_gradient
    grads, scores = gradient(head, dense, fmap, class_index)
    return tuple(np.asarray(ops.convert_to_numpy(x), np.float32) for x in (fmap, grads, scores))


def _split(model: keras.Model, layer: str):
    """(features, head, dense) of `model` at `layer`, built once and then reused.

    Why cached: a keras.Model built on an inner tensor adds new nodes to the
    model's layers that live as long as the model. Built on every call, that
    grew `ultrasonic serve` by about 30 KB per prediction without bound
    (benchmarks/load_serve.py, docs/reliability.md).
    """
    splits = _SPLITS.setdefault(model, {})
    if layer not in splits:
        splits[layer] = _build_split(model, layer)
    return splits[layer]


def _build_split(model: keras.Model, layer: str):
    """(features, head, dense): image -> A, A -> logits (or probabilities), the output Dense if used.

    A network of models/build.py has its logits as a layer ("logits", before the
    temperature): the head ends there. An older one ends in a Dense with a
    sigmoid or softmax, whose logits `_scores` computes from the Dense's weights.
    """
    target = model.get_layer(layer)
    features = keras.Model(model.inputs[0], target.output)  # one input, not a list: called with one array
    if any(l.name == LOGITS for l in model.layers):
        return features, keras.Model(target.output, model.get_layer(LOGITS).output), None
    last = model.layers[-1]
    linear = isinstance(last, keras.layers.Dense) and last.activation in (
        keras.activations.sigmoid, keras.activations.softmax)
    head = keras.Model(target.output, last.input if linear else model.outputs[0])
    return features, head, (last if linear else None)


def _scores(head_out, dense, class_index: int | None):
    """One score per image: the chosen class's logit (its probability when there is no Dense to undo)."""
    logits = head_out
    if dense is not None:
        logits = ops.matmul(head_out, ops.cast(dense.kernel, head_out.dtype))
        if dense.use_bias:
            logits = logits + ops.cast(dense.bias, head_out.dtype)
    if logits.shape[-1] == 1:
        return -logits[:, 0] if class_index == 0 else logits[:, 0]
    if class_index is None:
        chosen = ops.argmax(logits, axis=-1)
    else:
        chosen = ops.full((ops.shape(logits)[0],), class_index, dtype="int32")
    return ops.take_along_axis(logits, ops.expand_dims(chosen, -1), axis=-1)[:, 0]


def _tf_gradient(head, dense, fmap, class_index):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(fmap)
        # images are independent (training=False): the gradient of the sum is each image's own
        scores = _scores(head(fmap, training=False), dense, class_index)
        total = tf.reduce_sum(scores)
    return tape.gradient(total, fmap), scores


def _jax_gradient(head, dense, fmap, class_index):
    import jax

    trainable = [v.value for v in head.trainable_variables]
    frozen = [v.value for v in head.non_trainable_variables]

    def total(a):
        out, _ = head.stateless_call(trainable, frozen, a, training=False)
        scores = _scores(out, dense, class_index)
        return ops.sum(scores), scores

    grads, scores = jax.grad(total, has_aux=True)(fmap)
    return grads, scores
