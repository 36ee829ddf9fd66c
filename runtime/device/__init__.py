"""The device loop and its assembly from a validated config."""
