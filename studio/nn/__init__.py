"""Network definitions the project owns."""
