"""Consumer groups beside the gateway: each reads the whole message stream."""
