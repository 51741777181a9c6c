"""Models: the networks by name (names, Keras-free), their building blocks (seed, compact, applications),
preprocessing and augmentation layers, and build_model, which puts them together (build)."""

from ultrasonic.lazy import lazy_exports

__all__ = ["build_model", "preprocessing_of", "MODELS", "PREPROCESSINGS"]
__getattr__, __dir__ = lazy_exports(__name__, {"build_model": ".build", "preprocessing_of": ".build",
                                                "MODELS": ".names", "PREPROCESSINGS": ".names"})
