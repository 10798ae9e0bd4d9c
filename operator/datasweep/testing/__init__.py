"""Test helpers shipped with the package: tiny models built from configs, a local OpenAI-compatible server."""
