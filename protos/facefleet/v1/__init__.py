"""facefleet.v1: additive changes only within this version."""
