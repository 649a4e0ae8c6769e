"""Inference precision per model and device: measure the candidates, guard their accuracy against f32,
cache the choice, and resolve overrides (see README, "Precision per device")."""
