"""FaceFleet wire contract (generated protobuf and gRPC code, package facefleet.v1)."""
