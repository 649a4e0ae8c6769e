"""FaceFleet central server: enrolled people, the fleet of agents, their results, model versions.

Layers, each importing only those below it: `cli` → `app` → `api` → `fleet` → `rollouts` → `gallery` →
`state` → `domain`. Imports facefleet.core, facefleet.vision and facefleet.link; never the agent."""
