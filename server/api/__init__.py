"""What operators and agents call: the gRPC servicers, authentication (tokens, device certificates, the site
CA), the conversions of the gRPC services' messages (`wire/`, one module per service; the link's own messages
are converted by facefleet.link.serde; only these and the link import the generated facefleet.v1 code), and
the HTTP/JSON API (`http/`) on the same handlers (`handlers`)."""
