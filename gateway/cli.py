"""`switchyard` command line: serve, check-config, keys new."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import click

from gateway.config import Config, ConfigError, load_config
from gateway.keys import hash_key, new_key


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Switchyard: an API gateway between AI agents and the models they call."""


@main.command()
@click.option("--config", "config_path", default="config.toml", show_default=True, help="TOML or YAML config file.")
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
@click.option(
    "--simulate",
    is_flag=True,
    help="Also start a SIMULATED engine (loadtest/) for every backend whose URL is on this machine. "
    "For demos and trials: no GPU, no model, made-up text.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Gateway processes sharing the port (SO_REUSEPORT) under a supervisor; metrics are summed.",
)
@click.option("--worker", is_flag=True, hidden=True, help="Internal: run as one worker of a supervisor.")
def serve(config_path: str, host: str | None, port: int | None, simulate: bool, workers: int, worker: bool) -> None:
    """Run the gateway. SIGHUP reloads the config file."""
    from gateway.logs import configure_logging
    from gateway.server import serve as serve_forever

    config = _load_or_exit(config_path)
    writer = configure_logging(config.server.log_level, config.server.log_format)
    before_start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]] | None = None
    if simulate:
        from loadtest.cluster import start_simulated_backends

        async def start_engines() -> Callable[[], Awaitable[None]]:
            engines = await start_simulated_backends(config)

            async def stop_all() -> None:
                for e in engines:
                    await e.stop()

            return stop_all

        before_start = start_engines

    try:
        if workers > 1:
            from gateway.workers import supervise

            bind_port = config.server.port if port is None else port
            if bind_port == 0:
                click.echo("--workers needs a fixed port (server.port or --port), not 0", err=True)
                sys.exit(2)
            _run(supervise(config_path, workers, host, bind_port, before_start))
        else:
            _run(serve_forever(config, host, port, before_start, config_path=config_path, reuse_port=worker))
    finally:
        writer.close()


@main.command("check-config")
@click.argument("path")
def check_config(path: str) -> None:
    """Validate a config file; print every error with its location."""
    config = _load_or_exit(path)
    click.echo(
        f"{path}: OK ({len(config.backends)} backends, {len(config.models)} models, "
        f"{len(config.teams)} teams, {len(config.keys)} keys)"
    )


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("new")
@click.option("--team", required=True, help="Team the key belongs to.")
@click.option("--name", default=None, help="Key name (shown in logs and metrics instead of the key).")
@click.option("--models", default="*", show_default=True, help="Comma-separated model aliases, or *.")
def keys_new(team: str, name: str | None, models: str) -> None:
    """Print a fresh key once, and the config lines that store only its hash."""
    key = new_key()
    digest = hash_key(key)
    name = name or f"{team}-{digest[:8]}"
    model_list = ", ".join(f'"{m.strip()}"' for m in models.split(",") if m.strip())
    click.echo(f"API key (shown once, store it now): {key}\n")
    click.echo("Paste into your config:\n")
    click.echo(f'[[keys]]\nname = "{name}"\nteam = "{team}"\nsha256 = "{digest}"\nmodels = [{model_list}]')


def _load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(e.render(), err=True)
        sys.exit(1)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # optional: a faster event loop when installed
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
