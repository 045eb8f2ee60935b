"""In-memory MongoDB engine (placeholder; being built)."""
