"""The `compact` network of the default preset: small, batch-normalised, down-sampled early.

Why: on 2 CPU cores the seed spends most of its time on full-resolution
convolutions. A stride-2 stem and four stages of two 3x3 convolutions with
BatchNorm train faster per image and converge in fewer epochs.
"""

from __future__ import annotations

from keras import layers

from ultrasonic.models.names import compact_filters, norm_groups


def compact_backbone(x, width: int = 32, dropout: float = 0.2, norm: str = "batch"):
    """Stem (stride 2) + 4 stages (width, 2w, 4w, 8w) + global average pooling."""
    stem, *stages = compact_filters(width)
    x = _conv(x, stem, norm, stride=2, name="stem")
    for stage, filters in enumerate(stages, start=1):
        x = _conv(x, filters, norm, name=f"s{stage}a")
        x = _conv(x, filters, norm, name=f"s{stage}b")
        if stage < 4:
            x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dropout(dropout, name="drop_features")(x)


def _conv(x, filters: int, norm: str, stride: int = 1, name: str = "conv"):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    if norm == "group":
        # no moving statistics: training and inference normalise the same way
        x = layers.GroupNormalization(groups=norm_groups(filters), name=f"{name}_gn")(x)
    else:
        # momentum 0.9, not Keras' 0.99: short runs (a few hundred steps) need settled moving statistics
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)
