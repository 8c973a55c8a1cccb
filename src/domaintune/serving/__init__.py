"""Serving tuned models: an OpenAI-compatible HTTP API and a web chat over the same chat rendering as training."""
