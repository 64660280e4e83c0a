"""Middle layer: PyOD models, ring scoring, decisions and their persistence."""
