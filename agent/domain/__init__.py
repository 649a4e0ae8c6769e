"""The agent's domain types, free of SQL and protobuf: the store's records and errors, and the types of the
fleet protocol (gallery deltas, registrations, model releases and statuses). The lowest layer of the agent."""
