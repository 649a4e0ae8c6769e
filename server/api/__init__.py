"""The gRPC surface: servicers, authentication (tokens, device certificates, the site CA) and the
conversions of its services' messages (`wire/`, one module per service; the link's own messages are
converted by facefleet.link.serde). Only these and the link import the generated facefleet.v1 code."""
