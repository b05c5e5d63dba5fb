"""Calibration: the same small agent swarm on REAL vLLM CPU engines and on SIMULATED engines whose
cost model is fitted to them; figures side by side (`make bench-real`, `python -m loadtest.calibrate`).

    fit.py     measure a real vLLM (prefill and decode time per token, batch, block and KV sizes) and
               turn that into an EngineConfig for the simulator
    agents.py  the swarm: multi-turn agents sharing a system prompt, streaming through the gateway
    table.py   per-policy figures (prefix hit rate, TTFT, turn latency), the ranking check, markdown
"""
