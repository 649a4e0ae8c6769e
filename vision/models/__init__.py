"""The model store: imported models as OpenVINO IR with manifests, and the active version of each task."""
