"""A2A 0.3 ↔ 1.0: methods, shapes, states and errors translated, so either client reaches either agent."""
