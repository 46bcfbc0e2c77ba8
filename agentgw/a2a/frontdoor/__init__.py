"""What A2A clients speak to the gateway: the JSON-RPC binding and the HTTP+JSON binding."""
