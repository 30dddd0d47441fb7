"""Conversion: Keras models of a run -> float32, float16, dynamic-range and full-int8 .tflite files.

Every file carries its model card and is checked against its Keras original by running it through
the edge package (the device's preprocessing and interpreter), per head. Entry points:

- ``convert.run.convert_run(run_dir, ...)``: the whole run (what ``python -m convert`` calls);
- ``convert.tflite.convert_keras(model, precision, representative_images)``: one model -> bytes;
- ``convert.specs.resolve_precision(name)`` / ``resolve_approach(name)``: what a name implies.

Modules: ``plan`` (what to convert), ``run`` (convert, check, runtime compatibility),
``summary`` (verdicts, per-variant entries), ``check``, ``tflite``, ``inspect``, ``data``,
``compat`` + ``legacy_probe`` (tflite-runtime 2.14), ``runner`` (a file as the device runs it).

Nothing is imported at package import time: TensorFlow loads only inside the functions that need it.
"""
