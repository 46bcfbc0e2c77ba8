"""The agents behind the gateway: their cards, and calls to them over the binding and version they speak."""
