"""The agent-server link in Python, written once for both sides: its domain types (frozen dataclasses
validated on construction, raising LinkError) and their protobuf conversions (`serde`, the only module of
the link that imports the generated facefleet.v1 code). Imports facefleet.core and facefleet.vision."""
