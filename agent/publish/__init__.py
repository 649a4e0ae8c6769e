"""Events out of the agent: JSON payloads, the MQTT link (the only module that imports paho), the
durable outbox publisher and Home Assistant discovery."""
