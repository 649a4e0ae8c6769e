"""Conversions between the server's domain types and the generated facefleet.v1 messages of its services,
one module per service (`fleet`, `admin`, `query`) plus `services`, the generated bases and their
registration. With facefleet.link.serde, the only server code that imports the generated code."""
