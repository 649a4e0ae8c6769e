"""FaceFleet central server: enrolled people, the fleet of agents, their results, model versions."""

__version__ = "0.1.0"
