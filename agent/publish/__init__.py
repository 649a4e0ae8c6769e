"""Events out of the agent: the typed face and access events and their MQTT payloads, the MQTT link (the
only module that imports paho), the durable outbox publisher and Home Assistant discovery. Imports
recognition, store and domain."""
