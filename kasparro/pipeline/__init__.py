"""Run the ETL stages: extract raw batches, transform them to unified quotes, load them exactly once."""
