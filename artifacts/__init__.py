"""What the host stages share about their files: the run folder's layout (``artifacts.layout``) and
Keras model I/O (``artifacts.keras_io``). Host-only; the device package (``edge``) never imports it."""
