"""Frame sampling, motion gate, ONNX detectors, worker pool, tracking and the event shape."""
