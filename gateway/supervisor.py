"""Keeps one CameraWorker per camera this gateway runs (gateway/placement.py decides which), in step with the catalog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.camera import CameraStatus, CameraWorker, RunContext
from registry.models import Camera

log = logging.getLogger(__name__)


class StreamSupervisor:
    """Starts, changes and stops camera workers; changes apply to running streams at once."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.workers: dict[str, CameraWorker] = {}
        self._lock = asyncio.Lock()
        # The status of a camera another gateway of the tier runs (set by placement; None: none known).
        self.remote: Callable[[Camera], CameraStatus | None] | None = None

    async def apply(self, camera: Camera) -> None:
        """Bring a running worker in line with a changed camera (placement starts workers: `start`)."""
        async with self._lock:
            worker = self.workers.get(camera.id)
            if worker is None:
                return
            same_source = (worker.camera.url, worker.camera.substream_url) == (camera.url, camera.substream_url)
            if camera.enabled and same_source:
                worker.update(camera)
                return
            await self._stop(camera.id)
            if not camera.enabled:
                worker.mark_disabled(camera)
                return
            worker = CameraWorker(camera, self.ctx)
            self.workers[camera.id] = worker
            worker.start()

    async def start(self, camera: Camera) -> None:
        """Run an enabled camera here (its lease is ours); a running one is brought in line instead."""
        async with self._lock:
            fresh = camera.enabled and camera.id not in self.workers
            if fresh:
                worker = CameraWorker(camera, self.ctx)
                self.workers[camera.id] = worker
                worker.start()
        if not fresh:
            await self.apply(camera)

    async def remove(self, camera_id: str) -> None:
        """Stop a deleted camera's worker."""
        async with self._lock:
            await self._stop(camera_id)

    async def _stop(self, camera_id: str) -> None:
        worker = self.workers.pop(camera_id, None)
        if worker is not None:
            await worker.stop()

    def status(self, camera: Camera) -> CameraStatus:
        """Run-time status of a camera: its worker's here, a peer gateway's when it runs there, else idle."""
        worker = self.workers.get(camera.id)
        if worker is not None:
            return worker.status()
        elsewhere = self.remote(camera) if self.remote is not None else None
        return elsewhere if elsewhere is not None else CameraStatus.idle(camera)

    async def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every worker, in parallel, bounded by timeout."""
        async with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        if workers:
            await asyncio.wait([asyncio.create_task(w.stop(), name=f"stop:{w.camera.id}") for w in workers],
                               timeout=timeout)
