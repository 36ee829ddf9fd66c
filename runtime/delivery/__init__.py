"""Getting results off the device: durable outbox, MQTT connection and publisher, topics, orders, sinks."""
