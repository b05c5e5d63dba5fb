"""Agent swarm load generator and routing-policy benchmark (see docs/swarm.md)."""
