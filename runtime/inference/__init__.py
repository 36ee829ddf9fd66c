"""The one preprocessing, ONNX Runtime sessions and the segmentation model (which decodes its own outputs)."""
