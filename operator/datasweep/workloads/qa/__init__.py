"""Extractive title/alias QA with unanswerable questions (SQuAD-v2 style), seed 002: `datasweep worker qa`."""
