"""PyTorch side of smearscope: datasets, models, losses, metrics and training loops.

Imports `runtime` (the one preprocessing, classes, synthetic smears); never imported by the device.
"""
