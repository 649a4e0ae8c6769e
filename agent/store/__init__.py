"""The on-device SQLite store (the only package that imports sqlite_utils): people and embeddings, the
gallery revision, the MQTT outbox, the report queue to the server and the access audit log."""
