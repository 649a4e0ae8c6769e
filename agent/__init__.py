"""FaceFleet edge agent: cameras, face recognition, door decisions, MQTT events and the fleet link.

Layers, each importing only those below it (import-linter checks them): `cli` → `service` → `config` →
`fleet` → `updates` → `publish` → `recognition` | `cameras` | `store` → `domain`. Imports facefleet.core,
facefleet.vision and facefleet.link; never the server."""
