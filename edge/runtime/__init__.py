"""What the device runs for a prediction: the interpreter, a loaded model, the variants of a
deployment folder, image preprocessing, predictions and labelled-folder accuracy."""
