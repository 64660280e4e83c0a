"""Bottom layer: settings, event schema, database base and errors."""
