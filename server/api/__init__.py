"""The gRPC surface: servicers, authentication (tokens, device certificates, the site CA) and the
conversions to and from the generated facefleet.v1 code (the only server modules that import it)."""
