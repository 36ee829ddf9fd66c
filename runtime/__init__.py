"""Everything that runs on the device. Never imports torch."""
