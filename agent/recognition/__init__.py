"""Who a face is and what follows: matching against the in-memory galleries, calibration, tracking
faces across frames, door decisions, and choosing the face to enrol. Pure python/numpy over store records."""
