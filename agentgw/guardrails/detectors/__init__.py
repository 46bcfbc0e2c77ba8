"""The detectors behind the pattern guards: sensitive data, secrets, prompt injection, content rules."""
