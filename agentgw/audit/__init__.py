"""Audit: the record every Exchange leaves, and the sinks that keep it."""
