"""Conformance of the worker's job APIs to the shapes their existing clients speak."""
