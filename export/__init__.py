"""From a trained PyTorch model to shipped ONNX files: export, simplify, quantize, validate, card.

Imports `training` and `runtime`; never imported by the device.
"""
