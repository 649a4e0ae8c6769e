"""The server's domain types: frozen dataclasses validated on construction, free of protobuf and SQL
(people and events, dashboard queries, model versions and rollouts). Imports nothing above it."""
