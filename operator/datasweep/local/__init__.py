"""The local store and runner behind `datasweep run` (no cluster)."""
