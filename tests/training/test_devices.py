"""Data-parallel training on two virtual CPU devices, under JAX and TensorFlow.

The device count is fixed when a backend starts, so each backend trains in its
own subprocess with KERAS_BACKEND and the device flags set before import. That
makes these tests per-backend by nature: they run both backends themselves and
are not marked e2e (the Makefile's JAX rerun would repeat them unchanged).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ultrasonic.config import load_config
from ultrasonic.data.batches import ArrayBatches
from ultrasonic.training.devices import distribution, parse_devices
from ultrasonic.errors import ConfigError

# Train on two devices through the CLI, then on one through the Python API, with nothing random
# left but the initial weights (same seed): no augmentation, no dropout (see _write_data). 64 training
# images and batch 16 split evenly, so the two runs see exactly the same batches.
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from ultrasonic.cli import main

    tmp = Path(sys.argv[1])
    data, settings = str(tmp / "d.npz"), str(tmp / "s.yaml")
    assert main(["train", data, "--out", str(tmp / "two"), "--config", settings, "--devices", "2"]) == 0

    import keras
    from ultrasonic import train
    from ultrasonic.inference.engines import load_model

    train(data, str(tmp / "one"), config=settings, devices="1")
    two, one = (load_model(tmp / name / "model.keras").get_weights() for name in ("two", "one"))
    rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(two, one) if np.abs(b).max() > 0)
    print(json.dumps({"rel": rel, "backend": keras.backend.backend(),
                      "log": (tmp / "two" / "train.log").read_text()}))
""")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_devices_train_the_same_weights_as_one(backend, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": backend, "ULTRASONIC_CACHE": str(tmp_path / "cache"),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    _write_data(tmp_path)
    (tmp_path / "check.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    engine = "keras.distribution.DataParallel" if backend == "jax" else "tf.distribute.MirroredStrategy"
    assert "data-parallel over 2 devices" in result["log"] and engine in result["log"]
    assert "global batch 16 = 8 per device" in result["log"]
    # The same gradients summed in another order: float32 round-off (~1e-7 per step, measured
    # 1e-6 to 1e-5 after Adam's normalisation) against >= 1e-2 for a real difference such as
    # other batches or a wrong loss scale.
    assert result["rel"] < 1e-4, result["rel"]


def test_devices_setting_is_auto_or_a_count():
    assert parse_devices("auto") is None and parse_devices("2") == 2 and parse_devices(3) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="devices"):
            parse_devices(bad)
    assert load_config(overrides={"devices": 2}).devices == "2"  # YAML gives a number
    with pytest.raises(ConfigError, match="devices"):
        load_config(overrides={"devices": "many"})


def test_one_device_needs_no_distribution():
    with distribution("1", batch_size=30) as replicas:
        assert replicas.count == 1 and replicas.processes == 1


def test_global_batch_must_split_over_the_devices():
    with pytest.raises(ConfigError, match="batch_size 30 does not split evenly over 4 devices.*e.g. 32"):
        with distribution("4", batch_size=30):
            pass


def test_batches_split_evenly_over_devices():
    images = np.arange(23)[:, None]
    train = ArrayBatches(images, images, np.arange(23), 8, shuffle=True, seed=0, multiple_of=2)
    sizes = [len(train[k][0]) for k in range(len(train))]
    assert sizes == [8, 8, 6]  # one image left out this epoch: another one next epoch
    val = ArrayBatches(images, images, np.arange(23), 8, multiple_of=2)
    seen = np.concatenate([val[k][0][:, 0] for k in range(len(val))])
    assert len(seen) == 24 and set(seen) == set(range(23))  # every image, the first repeated once
    halves = [ArrayBatches(images, images, np.arange(23), 8, multiple_of=2, part=(k, 2))[0][0][:, 0]
              for k in (0, 1)]
    assert sorted(np.concatenate(halves)) == list(range(8)) and len(halves[0]) == len(halves[1]) == 4


def _write_data(tmp):
    from ultrasonic.data.synthetic import lesion_images

    images, labels, _ = lesion_images(104, size=32, seed=4)
    np.savez(tmp / "d.npz", train_images=images[:64, ..., 0], train_labels=labels[:64],
             val_images=images[64:84, ..., 0], val_labels=labels[64:84],
             test_images=images[84:, ..., 0], test_labels=labels[84:])
    # norm group: BatchNorm's batch statistics are per device (docs/scaling.md), so its weights would differ
    (tmp / "s.yaml").write_text("width: 16\nmin_split_images: 10\nverbose: 0\nrotation: 0\nshift: 0\nzoom: 0\n"
                                "norm: group\nhorizontal_flip: false\n"
                                # each replica draws its own intensity augmentation under MirroredStrategy
                                "brightness: 0\ncontrast: 0\ngamma: 0\nblur: 0\nnoise: 0\n"
                                "dropout: 0\nepochs: 1\nbatch_size: 16\nimage_size: 32\ntensorboard: false\n")


@pytest.mark.skipif(os.environ.get("ULTRASONIC_MULTIHOST_TEST") != "1",
                    reason="two JAX processes on localhost take ~90 s on 2 cores; set ULTRASONIC_MULTIHOST_TEST=1")
def test_two_jax_processes_train_the_same_weights_as_one(tmp_path):
    """The multi-host commands of docs/scaling.md, with two processes on this machine as the two hosts."""
    from ultrasonic.inference.engines import load_model

    _write_data(tmp_path)
    train = [sys.executable, "-m", "ultrasonic.cli", "train", str(tmp_path / "d.npz"), "--config",
             str(tmp_path / "s.yaml"), "--devices", "auto", "--out"]
    base = {**os.environ, "KERAS_BACKEND": "jax", "ULTRASONIC_CACHE": str(tmp_path / "cache")}
    base.pop("XLA_FLAGS", None)
    hosts = [subprocess.Popen(train + [str(tmp_path / f"host{k}")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**base, "KERAS_DISTRIBUTION_JOB_ADDRESSES": "127.0.0.1:12355",
                                              "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                                              "KERAS_DISTRIBUTION_PROCESS_ID": str(k)}) for k in (0, 1)]
    outputs = [h.communicate(timeout=600)[0] for h in hosts]
    assert [h.returncode for h in hosts] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    one = subprocess.run(train + [str(tmp_path / "one")], env=base, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    log = (tmp_path / "host1" / "train.log").read_text()
    assert "data-parallel over 2 devices" in log and "process 2 of 2" in log
    reference = load_model(tmp_path / "one" / "model.keras").get_weights()
    for host in ("host0", "host1"):
        weights = load_model(tmp_path / host / "model.keras").get_weights()
        rel = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(weights, reference)
                  if np.abs(b).max() > 0)
        assert rel < 1e-4, (host, rel)  # measured 9e-6
