"""The gateway's recordings (issue 11): one store on disk, a recorder and a live fMP4 muxer per camera run here.

The library (gateway/recording/) does the work; this module wires it to the gateway's life cycle:

* one `RecordingStore` under `recordings.dir` (default: `recordings` in the data folder), opened at start-up
  (it repairs what a crash left) and closed at shutdown (open segments are closed, a `stopped` gap follows);
* per camera run here, a `CameraRecorder` (settings: the camera's `recording`, each key absent taking the tier's
  default from `recordings.*`) and a `LiveMuxer`, both fed by the camera's connection (gateway/camera.py);
* exports (recording.mp4, clip.mp4) kept a while for a player's seeks (`exports`, gateway/exports.py), expired by
  the named task `recordings:exports`; the folder is emptied at start-up and shutdown, and after a retention sweep
  that removed segments, exports of the footage it deleted go;
* retention by age as a named task (`recordings:retention`, every `recordings.sweep_s`) in an executor: the
  sweep deletes files and index rows, which may block on the disk. The disk budget (`max_bytes`, the free-space
  floor) is also kept by the writer as it writes, so a full disk pauses recording at once.

Recordings live on the disk of the gateway that recorded them: a camera handed to another gateway of the tier
is recorded there from then on, and each gateway serves its own recordings.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from gateway.config import RecordingsConfig
from gateway.exports import ExportCache
from gateway.recording import (
    CameraRecorder, DiskStatus, LiveMuxer, Mode, RecordingSettings, RecordingStore,
)
from registry.models import Camera, RecordingChoice

log = logging.getLogger(__name__)

EXPORT_DIR = "exports"  # under the root: windows and clips being written or sent (gateway/api/recordings.py)


class Recordings:
    """The store, and per camera run here its recorder and live muxer."""

    def __init__(self, config: RecordingsConfig, root: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.root = root
        self.loop = loop
        self.store = RecordingStore(root, max_bytes=config.max_bytes, min_free_bytes=config.min_free_bytes,
                                    segment_s=config.segment_s, default_retain_days=config.retain_days,
                                    auto_sweep=False)
        self.live: dict[str, LiveMuxer] = {}
        self.exports = ExportCache(root / EXPORT_DIR, max_bytes=config.export_cache_bytes,
                                   keep_s=config.export_keep_s, free_bytes=self.store.free_bytes,
                                   floor_bytes=config.min_free_bytes)
        self.sweeps = 0
        self.removed_by_retention = 0

    # ---- life cycle -----------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the store (repairs segments a crash left open: blocking, in a thread)."""
        report = await asyncio.to_thread(self.store.open)
        await asyncio.to_thread(shutil.rmtree, self.root / EXPORT_DIR, True)  # exports a crash left behind
        if report.repaired or report.reindexed or report.removed:
            log.info("recordings at %s: %d segments repaired, %d re-indexed, %d removed", self.root,
                     report.repaired, report.reindexed, report.removed)

    async def close(self) -> None:
        """End live views, close open segments and the index (blocking, in a thread)."""
        for mux in list(self.live.values()):
            mux.close()
        self.live.clear()
        await self.exports.close()
        await asyncio.to_thread(shutil.rmtree, self.root / EXPORT_DIR, True)
        await asyncio.to_thread(self.store.close)

    async def run_retention(self) -> None:
        """Remove segments past their camera's retain_days (and over the budget), every sweep_s."""
        while True:
            await asyncio.sleep(self.config.sweep_s)
            report = await asyncio.to_thread(self.store.sweep)
            self.sweeps += 1
            removed = report.by_age + report.by_budget
            if removed:
                self.removed_by_retention += removed
                log.info("recordings retention: %d segments by age, %d for space, %d MiB freed", report.by_age,
                         report.by_budget, report.bytes_freed >> 20)
                await self.drop_deleted_exports()

    async def drop_deleted_exports(self) -> int:
        """Remove kept exports of footage retention deleted (their camera's oldest segment now starts later)."""
        cams = self.exports.cameras()
        if not cams or self.store.index is None:
            return 0
        index = self.store.index
        firsts = await asyncio.to_thread(lambda: {c: index.first_start(c) for c in cams})
        return self.exports.drop_deleted(firsts)

    # ---- settings -------------------------------------------------------------------------------------
    def settings_for(self, choice: RecordingChoice) -> RecordingSettings:
        """A camera's recording settings: its own keys, the tier's defaults for those it leaves out."""
        c = self.config
        return RecordingSettings(
            mode=Mode(choice.mode or c.mode),
            retain_days=choice.retain_days if choice.retain_days is not None else c.retain_days,
            pre_s=choice.pre_s if choice.pre_s is not None else c.pre_s,
            post_s=choice.post_s if choice.post_s is not None else c.post_s,
        )

    # ---- cameras --------------------------------------------------------------------------------------
    def attach(self, camera: Camera) -> tuple[CameraRecorder, LiveMuxer]:
        """The recorder and live muxer of a camera starting here (made, or configured when they exist)."""
        rec = self.store.recorder(camera.id, self.settings_for(camera.recording))
        mux = self.live.get(camera.id)
        if mux is None:
            mux = self.live[camera.id] = LiveMuxer(camera.id, self.loop)
        return rec, mux

    def configure(self, camera: Camera) -> None:
        """A camera's recording settings changed (a PATCH): applied to its recorder at once."""
        self.store.recorder(camera.id, self.settings_for(camera.recording))

    def detach(self, camera_id: str) -> None:
        """A camera stopped here (disabled, deleted, moved, handed over): its segment closes, its viewers end.

        Its recordings stay until retention removes them."""
        self.store.remove(camera_id)
        mux = self.live.pop(camera_id, None)
        if mux is not None:
            mux.close()

    def disk(self) -> DiskStatus:
        """The recordings' disk: free space (one statvfs, a few microseconds), usage, budget, whether full."""
        return self.store.disk_status()
