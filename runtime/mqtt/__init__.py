"""MQTT delivery for the device (publisher, topics, connection) and the embedded demo broker."""
