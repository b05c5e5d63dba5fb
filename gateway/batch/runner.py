"""The batch runner: runs the lines of in-progress batches through the normal pipeline at the
lowest priority, and finalizes, expires and cancels batches.

Every `poll_s` (and whenever a line ends) a round looks at the active batches in the store:

    in_progress  keep `window` lines outstanding per batch: claim that many (leased to this
                 process, grouped by prefix), hand each to pipeline.run_internal as class
                 `background` (below `batch`) with the prefix group as its session id; when
                 every line is done: finalizing
    finalizing   write the output and error files, then completed (idempotent: a crash in between
                 is finished by the next round, of this process or another)
    cancelling   cancel this process's lines of the batch; once no worker holds a lease, the
                 lines not run get batch_cancelled, files, cancelled
    past expires_at: the lines not run get batch_expired, files, expired

A line refused for lack of room (the admission queue shed it or it timed out, no deployment,
a rate limit) is not a failure: it is given back and claimed again after `retry_after_s`, and the
window shrinks. Leases of running lines are renewed; a killed process's lines are taken over when
its leases expire. See gateway/batch/store.py for the exactly-once rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from gateway.admission.priority import HEADER as PRIORITY_HEADER
from gateway.batch.objects import answer_line, output_file_id, unrun_line
from gateway.batch.store import Line
from gateway.batch.validate import ENDPOINTS
from gateway.batch.window import Window
from gateway.keys import Principal
from gateway.pipeline import run_internal
from gateway.request import SESSION_HEADER

if TYPE_CHECKING:
    from gateway.batch import BatchService

UNRUN = {
    "expired": ("batch_expired", "The request could not be executed before the completion window ended."),
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request executed."),
    "failed": ("invalid_api_key", "The API key that created this batch no longer exists."),
}


@dataclass(eq=False)
class Job:
    """This process's view of one in-progress batch."""

    row: dict[str, Any]
    principal: Principal
    window: Window
    local_only: bool
    spilling: bool = False
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)  # line idx -> its task
    renewed: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def team(self) -> str:
        return str(self.row["team"])


class BatchRunner:
    def __init__(self, svc: "BatchService") -> None:
        self.svc = svc
        self.gw = svc.gw
        self.cfg = svc.cfg
        self.store = svc.store
        self.metrics = svc.metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.jobs: dict[str, Job] = {}
        self.retired = False  # a reload handed the work to a new gateway: claim nothing more
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_poll = 0.0
        self._teams: set[str] = set()  # teams with a pending count on the gauge

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def retire(self) -> None:
        self.retired = True

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the loop and this process's running lines, and give their leases back so another
        process (or the next start) takes them at once."""
        self.retired = True
        tasks = [t for job in self.jobs.values() for t in job.tasks.values()]
        if self._task is not None:
            self._task.cancel()
            tasks.append(self._task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in self.jobs.values():
            if job.tasks:
                await self.store.release(job.id, list(job.tasks), self.owner)
        self.jobs.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except Exception:  # a store hiccup must not end the runner
                self.gw.log.exception("batch_round_failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.poll_s):
                    await self._wake.wait()

    # -- one round -----------------------------------------------------------------------------------
    async def _round(self) -> None:
        if not self.store.present():
            return
        now = time.monotonic()
        polled = now - self._last_poll >= self.cfg.poll_s
        if polled:
            self._last_poll = now
        if self.retired:  # a reload handed the work over: only keep the leases of what still runs here
            for job in self.jobs.values():
                if job.tasks and time.monotonic() - job.renewed >= self.cfg.lease_s / 3:
                    job.renewed = time.monotonic()
                    await self.store.renew(job.id, list(job.tasks), self.owner, self.cfg.lease_s)
            return
        rows = await self.store.active_batches()
        self._teams.update(r["team"] for r in rows)  # (a batch may start and end between two polls)
        active = {r["id"] for r in rows}
        for gone in [b for b in self.jobs if b not in active]:
            self._drop(self.jobs.pop(gone))
        pending: dict[str, int] = {}
        for row in rows:
            status = row["status"]
            if status == "finalizing":
                await self._finalize(row, "completed")
            elif status == "cancelling":
                await self._cancel(row)
            elif time.time() >= row["expires_at"]:
                await self._end_unrun(row, "expired")
            else:
                left = await self._feed(row, polled)
                if left is not None:
                    pending[row["team"]] = pending.get(row["team"], 0) + left
        if polled:  # teams whose last batch ended go back to 0
            for team in self._teams | {r["team"] for r in rows} | set(pending):
                self.metrics.pending.labels(team).set(pending.get(team, 0))
            self._teams = set(pending)

    async def _feed(self, row: dict[str, Any], polled: bool) -> int | None:
        """Keep the batch's window of lines outstanding; finalize it once every line is done.
        Returns the lines not run yet when it counted them (on polls)."""
        job = self.jobs.get(row["id"])
        if job is None:
            principal = self.gw.keys.by_name(row["key_name"])
            if principal is None or principal.team != row["team"]:
                await self._end_unrun(row, "failed")
                return None
            job = self.jobs[row["id"]] = self._job(row, principal)
        job.row = row
        if job.tasks and time.monotonic() - job.renewed >= self.cfg.lease_s / 3:
            job.renewed = time.monotonic()
            await self.store.renew(job.id, list(job.tasks), self.owner, self.cfg.lease_s)
        claimed: list[Line] = []
        room = job.window.limit - len(job.tasks)
        if room > 0 and not self.retired:
            claimed = await self.store.claim(job.id, self.owner, room, self.cfg.lease_s)
            for line in claimed:
                job.tasks[line.idx] = asyncio.get_running_loop().create_task(self._line(job, line))
        if claimed or job.tasks:
            return await self._left(job, polled)
        progress = await self.store.progress(job.id)
        if progress.pending == 0 and progress.leased == 0:
            if await self.store.set_status(job.id, "finalizing", ("in_progress",)):
                row = await self.store.get_batch(job.id) or row
                await self._finalize(row, "completed")
            return 0
        self._maybe_spill(job, progress.done)
        return progress.pending + progress.leased

    async def _left(self, job: Job, polled: bool) -> int | None:
        if not polled:
            return None
        p = await self.store.progress(job.id)
        self._maybe_spill(job, p.done)
        return p.pending + p.leased

    def _job(self, row: dict[str, Any], principal: Principal) -> Job:
        route = self.gw.router.get(row["model"])
        has_local = route is not None and any(d.backend.local for d in route.deployments)
        window = Window(self.cfg.initial_window, self.cfg.max_window, self.cfg.target_wait_s)
        return Job(row, principal, window, local_only=has_local)

    def _maybe_spill(self, job: Job, done: int) -> None:
        """spill = remote: when the rate seen so far cannot finish the batch in time on local
        engines, the remaining lines may also go to the model's remote deployments."""
        if self.cfg.spill != "remote" or job.spilling or not job.local_only:
            return
        started = job.row.get("in_progress_at") or job.row["created_at"]
        now = time.time()
        elapsed, left = now - started, job.row["expires_at"] - now
        if elapsed < 1.0:
            return
        remaining = job.row["total"] - done
        rate = done / elapsed
        eta = remaining / rate if rate > 0 else float("inf")
        if eta > self.cfg.spill_margin * left:
            job.spilling = True
            job.local_only = False
            self.gw.log.warning("batch_spill", batch_id=job.id, remaining=remaining, eta_s=round(eta, 1), left_s=left)

    def _drop(self, job: Job) -> None:
        for t in job.tasks.values():
            t.cancel()

    # -- one line --------------------------------------------------------------------------------------
    async def _line(self, job: Job, line: Line) -> None:
        endpoint, api = ENDPOINTS[job.row["obj"]["endpoint"]]
        session = f"batch-{job.id}-{line.grp}" if line.grp else f"batch-{job.id}"
        headers = CIMultiDict({PRIORITY_HEADER: "background", SESSION_HEADER: session})
        team = job.team
        self.metrics.held(team, +1)
        released = False
        try:
            ans = await run_internal(
                self.gw,
                job.principal,
                endpoint,
                line.body,
                headers,
                api,
                log_fields={"batch_id": job.id},
                local_only=job.local_only,
            )
            ctx = ans.ctx
            if _transient(ans.status, ctx.error_type):
                job.window.refused()
                await self.store.release(job.id, [line.idx], self.owner, self.cfg.retry_after_s)
                released = True
                return
            job.window.answered(float(ctx.log_fields.get("queue_ms", 0.0)) / 1000)
            ok = 200 <= ans.status < 300
            usage = ctx.usage
            tokens = (usage.prompt_tokens, usage.completion_tokens) if usage.known else (0, 0)
            out = answer_line(job.id, line.custom_id, ans.status, ctx.request_id, ans.body)
            # Shielded: the answer is in hand, so a stop (reload, shutdown) must not cancel its write:
            # a cancelled executor call that had not started yet never runs, and the line, given back
            # as not run, would be run a second time by the next owner.
            won = await asyncio.shield(self.store.complete(job.id, line.idx, ok, out, tokens))
            self.metrics.finish(team, ("done" if ok else "failed") if won else "duplicate")
            if won:
                self.metrics.used(team, *tokens)
        except asyncio.CancelledError:
            if not released:  # not run to the end: claimable again at once
                await asyncio.shield(self.store.release(job.id, [line.idx], self.owner))
            if self.retired or self.jobs.get(job.id) is not job:
                raise  # stop, or the batch was cancelled / expired
            # preempted: the admission queue gave its slot to a higher class (gateway/admission/queue.py)
            job.window.refused()
            self.metrics.finish(team, "preempted")
        finally:
            self.metrics.held(team, -1)
            if job.tasks.get(line.idx) is asyncio.current_task():  # (a given-back line may run again already)
                del job.tasks[line.idx]
            self._wake.set()

    # -- the end of a batch ------------------------------------------------------------------------------
    async def _cancel(self, row: dict[str, Any]) -> None:
        job = self.jobs.pop(row["id"], None)
        if job is not None:
            tasks = list(job.tasks.values())
            self._drop(job)
            await asyncio.gather(*tasks, return_exceptions=True)
        if (await self.store.progress(row["id"])).leased == 0:  # no other worker still runs one
            await self._end_unrun(row, "cancelled")

    async def _end_unrun(self, row: dict[str, Any], status: str) -> None:
        """Expired, cancelled, or failed (its key is gone): the lines not run get an error line."""
        job = self.jobs.pop(row["id"], None)
        if job is not None:  # expired while lines ran here: their answers would be dropped anyway
            tasks = list(job.tasks.values())
            self._drop(job)
            await asyncio.gather(*tasks, return_exceptions=True)
        code, message = UNRUN[status]
        n = await self.store.fail_pending(row["id"], lambda cid: unrun_line(row["id"], cid, code, message))
        self.metrics.finish(row["team"], status, n)
        await self._finalize(row, status)

    async def _finalize(self, row: dict[str, Any], status: str) -> None:
        """Output and error files from the done lines (file order), then the final status."""
        results = await self.store.results(row["id"])
        ok = [r for good, r in results if good]
        bad = [r for good, r in results if not good]
        files: dict[str, Any] = {}
        now = int(time.time())
        for kind, lines, key in (("output", ok, "output_file_id"), ("errors", bad, "error_file_id")):
            if not lines:
                continue
            fid = output_file_id(row["id"], kind)
            meta = {"id": fid, "team": row["team"], "purpose": "batch_output", "created_at": now}
            meta["filename"] = f"{row['id']}_{kind}.jsonl"
            await self.store.put_file(meta, b"\n".join(lines) + b"\n")
            files[key] = fid
        if status == "completed":
            if await self.store.set_status(row["id"], "completed", ("finalizing",), files):
                self.metrics.batches.labels("completed").inc()
        else:
            when = {"expired": ("in_progress",), "cancelled": ("cancelling",), "failed": ("in_progress",)}[status]
            if await self.store.set_status(row["id"], status, when, files):
                self.metrics.batches.labels(status).inc()
        self.jobs.pop(row["id"], None)


def _transient(status: int, error_type: str | None) -> bool:
    """A refusal for lack of room or rate (the admission queue shed it or timed out, no deployment,
    a rate limit, an upstream's 429/503 after the pipeline's retries): the line is given back and
    retried, not failed. A hard budget is not transient: those lines fail."""
    return (status in (429, 503) and error_type != "budget_exceeded") or status == 499
