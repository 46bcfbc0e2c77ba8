"""The LLM APIs served besides chat completions, each in terms of it: the Responses API (and, later, others)."""
