"""Budgets: one ledger per agent task (and per-principal windows), reserved before a call and settled after."""
