"""The generate stage (SPEC 6.1): rephrase + validate, or code scenarios; OpenAI SDK or transformers."""
