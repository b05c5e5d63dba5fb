"""Exact and semantic response caches: see docs/caching.md and phase.py."""
