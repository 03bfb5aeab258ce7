"""Data: world generator, Visual Genome ingestion, benchmark and bag construction, records, input."""
