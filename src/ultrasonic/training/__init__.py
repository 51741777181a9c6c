"""Training: model.fit with the run's callbacks (fit), the callbacks themselves (history CSV, best
checkpoint, backup and resume), and the devices it runs on (devices)."""

from ultrasonic.lazy import lazy_exports

__all__ = ["train", "TrainResult", "planned_epochs", "compile_model"]
__getattr__, __dir__ = lazy_exports(__name__, {name: ".fit" for name in __all__})
