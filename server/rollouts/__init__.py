"""Model versions and their rollouts: the catalogue, the files served to agents, the rollout plan
and its control, model uploads and what each agent should run. Imports gallery, state and domain."""
