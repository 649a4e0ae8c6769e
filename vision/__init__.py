"""The face pipeline that agent and server both run: the OpenVINO runtime (the only module that imports
openvino), images, detection, alignment, quality, preprocessing, the analyzer and its result types, and
`models/`, the model store. Imports facefleet.core only."""
