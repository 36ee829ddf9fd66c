"""What device and server share: class indices, errors, ids, message schemas, model cards, configs."""
