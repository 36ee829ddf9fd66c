"""Training side of the diagnosis network: the shared diabetes tables, the network, calibration,
the logistic-regression baseline and cross-validation (`python -m training.diagnosis`)."""
