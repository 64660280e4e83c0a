"""Top layer: the FastAPI app the security team and the platform use."""
