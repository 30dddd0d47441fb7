"""Run ``python -m train`` in a subprocess with N logical CPU devices (mirrored-strategy tests).

Usage: python tests/train_worker.py LOGICAL_CPUS [train CLI args...]. Logical devices must be
configured before TensorFlow initialises, hence a separate process.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    n = int(sys.argv[1])
    if n > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    import keras

    keras.config.disable_traceback_filtering()
    from train.__main__ import main

    main(args=sys.argv[2:], prog_name="python -m train")
