"""Enrolled people: enrolment from images with the shared vision pipeline, updates, and
re-embedding for a new embedding model. Imports state and domain."""
