"""The agent's own records, free of SQL and protobuf: the store's records and errors, where the gallery
stands on the server, and the events queued for it. The lowest layer of the agent; the link's messages are
facefleet.link types."""
