"""FaceFleet edge agent: face detection, recognition and expression on OpenVINO."""

__version__ = "0.1.0"
