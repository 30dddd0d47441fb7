"""polyhead datasets: every source into one on-disk form (images + labels.csv), and the input pipeline.

Modules: ``folder`` (load and check a dataset folder), ``synth`` (built-in synthetic cars),
``stanford_cars`` (Stanford Cars importer), ``pipeline`` (decoded arrays and tf.data, host only).
"""
