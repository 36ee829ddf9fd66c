"""Where frames come from and what starts a capture: cameras, triggers, bundled and synthetic smears."""
