"""Switchyard: an asyncio API gateway between AI agents and the models they call."""

__version__ = "0.1.0"
