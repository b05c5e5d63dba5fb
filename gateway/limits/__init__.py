"""Rate limits, token estimation, prices and budgets: the admission phase that runs before caches.

config.py (schema), buckets.py (token-bucket arithmetic), store.py (the Store protocol and the
in-memory store), redis_store.py (one Lua script per check), ledger.py (durable spend in SQLite),
estimate.py (tiktoken counts), prices.py (litellm's price map + config), periods.py (budget periods),
phase.py (the pipeline phase), usage.py (GET /v1/switchyard/usage).
"""
