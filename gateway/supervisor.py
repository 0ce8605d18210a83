"""Keeps one CameraWorker per enabled camera in step with the catalog."""

from __future__ import annotations

import asyncio
import logging

from gateway.camera import CameraStatus, CameraWorker, RunContext
from registry.models import Camera
from registry.store import CameraStore

log = logging.getLogger(__name__)


class StreamSupervisor:
    """Starts, changes and stops camera workers; changes apply to running streams at once."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.workers: dict[str, CameraWorker] = {}
        self._lock = asyncio.Lock()

    async def load(self, store: CameraStore) -> int:
        """Start a worker for every enabled camera in the catalog."""
        n = 0
        cursor = None
        while True:
            cams, cursor = await store.list(page_size=500, cursor=cursor)
            for cam in cams:
                await self.apply(cam)
                n += 1
            if not cursor:
                return n

    async def apply(self, camera: Camera) -> None:
        """Bring the running worker in line with a created or changed camera."""
        async with self._lock:
            worker = self.workers.get(camera.id)
            if worker is not None:
                same_source = (worker.camera.url, worker.camera.substream_url) == (camera.url, camera.substream_url)
                if camera.enabled and same_source:
                    worker.update(camera)
                    return
                await self._stop(camera.id)
                if not camera.enabled:
                    worker.mark_disabled(camera)
            if camera.enabled:
                worker = CameraWorker(camera, self.ctx)
                self.workers[camera.id] = worker
                worker.start()

    async def remove(self, camera_id: str) -> None:
        """Stop a deleted camera's worker."""
        async with self._lock:
            await self._stop(camera_id)

    async def _stop(self, camera_id: str) -> None:
        worker = self.workers.pop(camera_id, None)
        if worker is not None:
            await worker.stop()

    def status(self, camera: Camera) -> CameraStatus:
        """Run-time status of a camera (disabled ones have no worker)."""
        worker = self.workers.get(camera.id)
        return worker.status() if worker is not None else CameraStatus.idle(camera)

    async def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every worker, in parallel, bounded by timeout."""
        async with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        if workers:
            await asyncio.wait([asyncio.create_task(w.stop(), name=f"stop:{w.camera.id}") for w in workers],
                               timeout=timeout)
