"""The model file's names and format version: a leaf, so that code which only reads or serves a
model (ONNX Runtime, the run folder) can name them without importing torch."""

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"  # tensors only
SPEC_FILE = "model.json"  # everything else: architecture, classes, preprocessing (models.classifier.ModelSpec)
