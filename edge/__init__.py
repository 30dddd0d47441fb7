"""polyhead's edge runtime: label schema, model card, preprocessing and TFLite inference.

This package runs on the device. It imports only the standard library, numpy, Pillow, click and
the LiteRT / tflite-runtime interpreter; host packages may import it, never the reverse.
Importing it does no work.
"""

__version__ = "0.1.0"
