"""Top layer: event sources (files, Kafka), contract validation, dead-letter, the processing loop."""
