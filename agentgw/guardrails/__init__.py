"""Guardrails: detectors for sensitive data, secrets, prompt injection and content rules, external classifiers,
and the engine the guard stage (agentgw/stages/guard.py) applies them with, to every plane, both ways."""
