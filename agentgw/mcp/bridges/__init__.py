"""Calls that take more than one round: an upstream's questions carried to the caller in its era and back
(roundtrip.py, relay.py), under the gateway's own sealed `requestState` (state.py)."""
