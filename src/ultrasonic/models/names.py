"""The names of the networks and preprocessings ultrasonic builds: Keras-free, so settings can check them.

    "resnet50" in MODELS            # True
    application_preprocessing("mobilenetv2")   # "signed"
"""

from __future__ import annotations

# keras.applications backbone -> (its constructor, the preprocessing its ImageNet weights expect)
APPLICATIONS = {
    "resnet50": ("ResNet50", "vgg16"),  # "caffe": BGR minus the ImageNet means
    "densenet121": ("DenseNet121", "imagenet"),  # "torch": /255, minus mean, over std
    "mobilenetv2": ("MobileNetV2", "signed"),  # "tf": [-1, 1]
    "efficientnetb0": ("EfficientNetB0", "raw"),  # rescales inside the network
}
MODELS = ("seed", "compact", *APPLICATIONS)
# "auto" resolves to what the network expects (preprocessing_of); models/preprocess.py builds the others
PREPROCESSINGS = ("auto", "unit", "standard", "vgg16", "signed", "imagenet", "raw")
NORMS = ("batch", "group")  # the compact network's normalisation


def compact_filters(width: int) -> tuple[int, ...]:
    """The filters of the compact network's layers: a stride-2 stem of width // 2, then 4 stages."""
    return (width // 2, width, 2 * width, 4 * width, 8 * width)


def norm_groups(filters: int) -> int:
    """GroupNormalization's group count for a layer of `filters` (it must divide them)."""
    return min(8, filters // 4)


def application_preprocessing(model: str) -> str:
    return APPLICATIONS[model][1]


def preprocessing_of(model: str, preprocessing: str) -> str:
    """The preprocessing setting, with 'auto' resolved: what the network's weights expect."""
    if preprocessing != "auto":
        return preprocessing
    if model in APPLICATIONS:
        return application_preprocessing(model)
    return "vgg16" if model == "seed" else "unit"
