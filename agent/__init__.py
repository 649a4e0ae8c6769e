"""FaceFleet edge agent: cameras, face recognition, door decisions, MQTT events and the fleet link.

Layers, each importing only those below it: `cli` → `service` → `fleet`, `updates` → `publish` →
`recognition`, `cameras` → `store`. Imports facefleet.core, facefleet.vision and facefleet.link; never the
server."""
