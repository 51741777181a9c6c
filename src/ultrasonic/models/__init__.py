"""Models: the networks by name (names, Keras-free), their building blocks (seed, compact, applications),
preprocessing and augmentation layers; build_model puts the network together, training_model puts the
augmentation in front of it (build)."""

from ultrasonic.lazy import lazy_exports

__all__ = ["build_model", "training_model", "preprocessing_of", "MODELS", "PREPROCESSINGS"]
__getattr__, __dir__ = lazy_exports(__name__, {"build_model": ".build", "training_model": ".build",
                                                "preprocessing_of": ".build",
                                                "MODELS": ".names", "PREPROCESSINGS": ".names"})
