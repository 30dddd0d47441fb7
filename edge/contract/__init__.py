"""The model contract every ``.tflite`` carries: the label schema (heads, classes, joint decoding),
the model card (its fields, their checks, the zip it lives in) and the standard TFLite Metadata."""
