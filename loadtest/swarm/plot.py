"""Optional PNG of a run: turn latency over time, and each engine's waiting / running requests.
matplotlib is optional (`pip install -e '.[plots]'`); without it the swarm says so and goes on."""

from __future__ import annotations

from typing import Any


def plot(report: dict[str, Any], path: str) -> bool:
    """Write the PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = report["series"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    if series["turns"]:
        xs, ys = zip(*series["turns"])
        top.scatter(xs, ys, s=4, alpha=0.5)
    top.set_ylabel("turn latency (s)")
    top.set_title(f"{report['scenario']} / {report['policy']} (simulated seconds)")
    for name, samples in series["engines"].items():
        if samples:
            t, waiting, running = zip(*samples)
            (line,) = bottom.plot(t, running, label=f"{name} running")
            bottom.plot(t, waiting, linestyle="--", color=line.get_color(), label=f"{name} waiting")
    bottom.set_xlabel("time since start (s)")
    bottom.set_ylabel("requests")
    bottom.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
