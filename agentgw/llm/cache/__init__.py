"""The response cache: an identical request answered from a kept answer (exact.py), and, on an exact miss, a
request that differs only in wording (semantic.py)."""
