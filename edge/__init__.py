"""polyhead's edge package: everything the device runs, and nothing else.

- ``runtime/``: interpreter, model, variants, preprocessing, predictions, labelled-folder accuracy;
- ``contract/``: the label schema, the model card and the TFLite Metadata every file carries;
- ``safety/``: the flatbuffer reader, the model check, known runtime crashes, the child probe,
  safe paths, signatures;
- ``bench/``: the on-device benchmark;
- ``live/``: camera, video and stream input (``polyhead-edge live``);
- ``api.py``: the Python API, importable from here (``edge.load``, ``edge.Classifier``);
- ``cli.py`` (``polyhead-edge``), ``errors``, ``io``, ``log``, ``text``: shared by all of them.

It imports only the standard library, numpy, Pillow, click and the LiteRT / tflite-runtime
interpreter; host packages may import it, never the reverse. Importing it does no work.
"""

__version__ = "0.1.0"

__all__ = ["Classifier", "load"]


def __getattr__(name: str):
    """``edge.load`` and ``edge.Classifier``, imported on first use: importing ``edge`` stays free."""
    if name in __all__:
        from edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
