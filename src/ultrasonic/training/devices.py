"""Data-parallel training on several devices with each backend's own engine.

JAX: `keras.distribution.DataParallel` (one replica per device, the batch
sharded along its first axis, gradients all-reduced by XLA). TensorFlow:
`tf.distribute.MirroredStrategy` over the GPUs or, without GPUs, over N
logical CPU devices (useful for testing only: TensorFlow already uses every
core on one device). No parallelism of our own.

    prepare_backend("2")                       # before Keras/TensorFlow is imported
    with distribution("2", batch_size=32) as replicas:
        model = build_model(cfg, 2); model.compile(...); model.fit(...)

`devices` is "auto" (every accelerator; one CPU device when there is none)
or a count. The batch size is global: each of N replicas sees batch_size / N.
Several hosts (JAX only): set KERAS_DISTRIBUTION_JOB_ADDRESSES,
KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID on every
host; `prepare_backend` then calls `keras.distribution.initialize()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Iterator

from ultrasonic.errors import ConfigError

log = logging.getLogger("ultrasonic")

MULTI_HOST_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                  "KERAS_DISTRIBUTION_PROCESS_ID")


@dataclass(frozen=True)
class Replicas:
    """Where one training runs: `count` replicas on `devices`; this is process `process` of `processes`."""

    count: int
    devices: tuple[str, ...]
    process: int = 0
    processes: int = 1


def parse_devices(setting: str | int) -> int | None:
    """'auto' -> None, '2' -> 2; anything else is a ConfigError."""
    text = str(setting).strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError(f"devices={setting!r}: give 'auto' or a whole number of devices, 1 or more")


def prepare_backend(setting: str | int) -> None:
    """Things that must happen before the backend starts its devices; call before importing Keras.

    TensorFlow: oneDNN's CPU max-pool gradient aborts the process under
    MirroredStrategy on logical CPU devices (TF 2.21, "Check failed: dtype() ==
    expected_dtype"), and oneDNN is chosen once, at import; so it is switched
    off for any multi-device run. It only affects CPU kernels.
    JAX on several hosts: join the cluster described by the environment.
    (KERAS_BACKEND=jax without JAX installed is backend.require_keras's error, at the first Keras import.)
    """
    if parse_devices(setting) == 1:
        return
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1") or 1) > 1:
        _join_cluster()


@contextlib.contextmanager
def distribution(setting: str | int, batch_size: int) -> Iterator[Replicas]:
    """Build, compile and fit inside this block to train on the devices `setting` names."""
    import keras

    wanted = parse_devices(setting)
    _check_batch(batch_size, wanted or 1)  # "auto" is checked once the devices are counted
    backend = keras.backend.backend()
    if backend == "jax":
        manager = _jax_data_parallel(wanted, batch_size)
    elif backend == "tensorflow":
        manager = _tf_mirrored(wanted, batch_size)
    elif wanted in (None, 1):
        manager = contextlib.nullcontext(Replicas(1, ("default",)))
    else:
        raise ConfigError(f"devices={setting}: multi-device training needs the jax or tensorflow backend, "
                          f"not {backend}")
    with manager as replicas:
        yield replicas


def _join_cluster() -> None:
    import keras

    if keras.backend.backend() != "jax":
        raise ConfigError("KERAS_DISTRIBUTION_NUM_PROCESSES is set, but training on several hosts is supported "
                          "with KERAS_BACKEND=jax only; unset it or switch the backend")
    missing = [name for name in MULTI_HOST_ENV if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"training on several hosts needs {', '.join(MULTI_HOST_ENV)}; {', '.join(missing)} "
                          "not set (see docs/scaling.md)")
    keras.distribution.initialize()


def _check_batch(batch_size: int, count: int) -> None:
    if batch_size % count:
        raise ConfigError(f"batch_size {batch_size} does not split evenly over {count} devices; the batch size is "
                          f"global, so choose a multiple of {count} (e.g. {count * -(-batch_size // count)}) "
                          "or another number of devices")


@contextlib.contextmanager
def _jax_data_parallel(wanted: int | None, batch_size: int) -> Iterator[Replicas]:
    import jax
    import keras

    available = keras.distribution.list_devices()
    count = len(available) if wanted is None else wanted
    if count > len(available):
        hint = (f"; XLA_FLAGS=--xla_force_host_platform_device_count={count} set before JAX starts makes {count} "
                "CPU devices (for testing)") if available[0].startswith("cpu") else ""
        raise ConfigError(f"devices={count}: JAX sees only {len(available)} ({', '.join(available)}){hint}")
    if jax.process_count() > 1 and count != len(available):
        raise ConfigError(f"devices={count}: on several hosts every device takes part; use --devices auto")
    chosen = tuple(available[:count])
    replicas = Replicas(count, chosen, jax.process_index(), jax.process_count())
    if count == 1:
        log.info("devices: one device (%s of %s available)", chosen[0], len(available))
        yield replicas
        return
    _check_batch(batch_size, count)
    log.info("devices: data-parallel over %d devices (%s) with keras.distribution.DataParallel, process %d of %d; "
             "global batch %d = %d per device", count, ", ".join(chosen), replicas.process + 1, replicas.processes,
             batch_size, batch_size // count)
    # auto_shard_dataset=False: on several hosts ArrayBatches(part=...) already gives each process its share
    with keras.distribution.DataParallel(devices=list(chosen), auto_shard_dataset=False).scope():
        yield replicas


@contextlib.contextmanager
def _tf_mirrored(wanted: int | None, batch_size: int) -> Iterator[Replicas]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")  # physical: listing logical devices would start them
    if gpus:
        count = len(gpus) if wanted is None else wanted
        if count > len(gpus):
            raise ConfigError(f"devices={count}: TensorFlow sees only {len(gpus)} GPUs")
        names = tuple(f"/gpu:{k}" for k in range(count))
    else:
        count = 1 if wanted is None else wanted
        names = _logical_cpus(tf, count)
    if count == 1:
        yield Replicas(1, names[:1])
        return
    _check_batch(batch_size, count)
    strategy = tf.distribute.MirroredStrategy(list(names))
    log.info("devices: data-parallel over %d devices (%s) with tf.distribute.MirroredStrategy; "
             "global batch %d = %d per device", strategy.num_replicas_in_sync, ", ".join(names),
             batch_size, batch_size // count)
    with strategy.scope():
        yield Replicas(strategy.num_replicas_in_sync, names)


def _logical_cpus(tf, count: int) -> tuple[str, ...]:
    """Split the CPU into `count` logical devices; possible only before TensorFlow starts its devices."""
    if count > 1 and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        raise ConfigError(f"devices={count} on CPU under TensorFlow needs TF_ENABLE_ONEDNN_OPTS=0 set before "
                          "TensorFlow is imported (oneDNN's max-pool gradient aborts under MirroredStrategy); "
                          "`ultrasonic train` does this itself, or call ultrasonic.training.devices.prepare_backend first")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if count > 1 and len(current or [None]) != count:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError as exc:
            raise ConfigError(f"devices={count}: TensorFlow has already started its CPU device in this process, so "
                              "it cannot be split into logical devices; start a fresh process "
                              "(`ultrasonic train ... --devices N`)") from exc
    return tuple(d.name for d in tf.config.list_logical_devices("CPU")[:count])
