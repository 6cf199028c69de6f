"""The discrete-event world: devices, links, availability and the server (no torch here)."""
