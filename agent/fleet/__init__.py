"""The agent's link to the fleet server: the gRPC channel and client, registration, the gallery watch
stream, and its events reported as link Events. Imports updates, publish, recognition, store and domain."""
