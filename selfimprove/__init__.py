"""selfimprove: search builds trees, trees become step-level preferences, preferences train the next policy."""

__version__ = "0.1.0"
