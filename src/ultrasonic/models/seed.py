"""The seed network: the origin's Sequential CNN, layer for layer (DESIGN.md).

5 x [Conv2D 3x3 (L2, He-normal) -> ReLU -> LayerNormalization(axis=1) -> MaxPool 2x2],
filters 8..128; Dropout -> GlobalAveragePooling -> two Dense+LayerNorm+Dropout
blocks -> one sigmoid unit (softmax for more classes). `padding="same"` so any
input of 32 px or more works (the origin only ever saw 224 px).
"""

from __future__ import annotations

from keras import layers, regularizers

FILTERS = (8, 16, 32, 64, 128)


def seed_backbone(x, l2: float = 1e-3, dropout: float = 0.2):
    """The convolutional trunk; returns the pooled feature vector."""
    for i, filters in enumerate(FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal",
                          kernel_regularizer=regularizers.L2(l2), name=f"conv{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        # axis=1 normalises over the image height only: verbatim from the origin.
        x = layers.LayerNormalization(axis=1, name=f"norm{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Dropout(dropout, name="drop_features")(x)
    return layers.GlobalAveragePooling2D(name="gap")(x)


def seed_head(x, dropout: float = 0.2):
    """Dense 128 -> Dense 64, each ReLU + LayerNorm + Dropout."""
    for units in (128, 64):
        x = layers.Dense(units, kernel_initializer="he_normal", name=f"dense{units}")(x)
        x = layers.ReLU(name=f"dense{units}_relu")(x)
        x = layers.LayerNormalization(name=f"dense{units}_norm")(x)
        x = layers.Dropout(dropout, name=f"dense{units}_drop")(x)
    return x
