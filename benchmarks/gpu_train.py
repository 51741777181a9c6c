"""GPU training speed (JAX backend): the seed network and the default preset, data held on the device.

Prepared for the lent GPU machine (it has JAX but no TensorFlow): run with
    KERAS_BACKEND=jax python benchmarks/gpu_train.py --json gpu.json
The uint8 images (random: speed does not depend on content) live on the GPU; each
step gathers a batch by index, runs the model (uint8 in, in-model augmentation on)
and applies the optimiser, all in one jitted function (Keras' stateless API), under
the mixed_bfloat16 policy. Reports images/s and seconds per epoch of 5,216 images.
A CPU smoke run: KERAS_BACKEND=jax python benchmarks/gpu_train.py --images 64 --size 64 --steps 3
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from common import write_json  # noqa: E402


def build(preset: str, size: int):
    from ultrasonic import load_config
    from ultrasonic.models import build_model, training_model

    cfg = load_config(preset=preset, overrides={"image_size": size})
    return training_model(build_model(cfg, 2), cfg), cfg  # as `train` fits it: the augmentation in front


def train_rate(preset: str, images: int, size: int, batch: int, steps: int) -> dict:
    """Images/s of a jitted train step gathering batches from device-resident uint8 images."""
    model, cfg = build(preset, size)
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.BinaryCrossentropy()
    key = jax.random.PRNGKey(0)
    x_all = jax.random.randint(key, (images, size, size, cfg.channels), 0, 256, dtype=jnp.int32).astype(jnp.uint8)
    y_all = (jax.random.uniform(key, (images, 1)) < 0.5).astype(jnp.float32)

    def loss(trainable, non_trainable, x, y):
        pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, pred), non_trainable

    @jax.jit
    def step(state, idx):
        trainable, non_trainable, opt_vars = state
        x, y = x_all[idx], y_all[idx]
        (value, non_trainable), grads = jax.value_and_grad(loss, has_aux=True)(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), value

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.integers(0, images, batch)) for _ in range(steps + 3)]
    for idx in batches[:3]:  # compile and warm up
        state, value = step(state, idx)
    value.block_until_ready()
    start = time.perf_counter()
    for idx in batches[3:]:
        state, value = step(state, idx)
    value.block_until_ready()
    rate = steps * batch / (time.perf_counter() - start)
    return {"preset": preset, "img_s": rate, "s_per_epoch_5216": 5216 / rate, "batch": batch, "size": size,
            "channels": cfg.channels, "params": model.count_params()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5216)
    parser.add_argument("--size", type=int, default=224, help="image size for the seed network")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    results = [train_rate("seed", args.images, args.size, args.batch, args.steps)]
    default_size = None if args.size == 224 else args.size  # the default preset's own size on the GPU
    from ultrasonic import load_config

    results.append(train_rate("default", args.images, default_size or load_config().image_size, args.batch,
                              args.steps))
    info = {"device": str(jax.devices()[0]), "jax": jax.__version__, "keras": keras.__version__,
            "results": results}
    for r in results:
        print(f"{r['preset']:8s} {r['size']} px x{r['channels']}: {r['img_s']:,.0f} images/s, "
              f"{r['s_per_epoch_5216']:.2f} s per epoch of 5,216 images (batch {r['batch']})")
    if args.json:
        write_json(args.json, info)


if __name__ == "__main__":
    main()
