"""FaceFleet: edge face recognition on OpenVINO, agents on Intel boxes and a central fleet server.

Packages: `core` (errors, config base, state directories, CLI helpers), `vision` (the face pipeline and the
model store), `link` (the agent-server link's types and their protobuf conversions), `agent`, `server`, and
`v1` (generated protobuf and gRPC code of the wire contract).
"""

__version__ = "0.1.0"
