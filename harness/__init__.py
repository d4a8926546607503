"""Test and demo harness: real services started locally, without Docker."""
