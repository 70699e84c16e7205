"""The gateway: WebSocket and REST in front, the log and the store behind."""
