"""FaceFleet central server: enrolled people, the fleet of agents, their results, model versions.

Layers, each importing only those below it (import-linter checks them): `cli` → `app` → `api` → `fleet` →
`rollouts` → `gallery` → `paths` → `config` → `state` → `domain` → `errors`. Imports facefleet.core,
facefleet.vision and facefleet.link; never the agent."""
