"""HTTP layer of the pipeline example (FastAPI)."""
