"""The LLM plane: OpenAI-compatible `/v1/chat/completions`, `/v1/embeddings` and `/v1/models` in front of
OpenAI-compatible, Azure, Anthropic and in-process mock providers."""
