"""The agents' side of the server: the FleetService logic (registration, watch, reports) and the
dashboard queries. Imports rollouts, gallery, state and domain."""
