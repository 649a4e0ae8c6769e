"""The gRPC surface: servicers, authentication (tokens, device certificates, the site CA) and the
conversions of the admin and query messages (`wire`, `wire_models`; the link's own messages are converted
by facefleet.link.serde). Only these and the link import the generated facefleet.v1 code."""
