"""The model store: imported models as OpenVINO IR with manifests, and which version of each task is active."""
