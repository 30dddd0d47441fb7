"""Conversion: Keras models of a run -> float32, float16, dynamic-range and full-int8 .tflite files.

Every file carries its model card and is checked against its Keras original by running it through
the edge package (the device's preprocessing and interpreter), per head. Entry points:

- ``convert.run.convert_run(run_dir, ...)``: the whole run (what ``python -m convert`` calls);
- ``convert.tflite.convert_keras(model, precision, representative_images)``: one model -> bytes.

Nothing is imported at package import time: TensorFlow loads only inside the functions that need it.
"""
