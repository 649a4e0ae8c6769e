"""The agent's link to the fleet server: the gRPC channel, registration, the gallery watch stream, and
event reports."""
