"""Recording, playback and live fMP4 of cameras (issue 11): remux only, never re-encode.

Wiring (the HTTP endpoints, page and config are built on this):

* start-up: ``store = RecordingStore(root, max_bytes=..., min_free_bytes=...); store.open()`` (blocking:
  it repairs segments a crash left open; run it before serving, or in an executor).
* per camera: ``rec = store.recorder(camera_id, RecordingSettings.from_dict(camera["recording"]))`` and
  ``live = LiveMuxer(camera_id, loop)``; settings changes: ``store.recorder(camera_id, new_settings)``.
* demuxer thread (gateway/ingest.py `Demuxer`): after opening, ``rec.stream_opened(stream)`` and
  ``live.stream_opened(stream)``; for *every* packet read (before any analysis skipping, after
  pacing) ``rec.packet(packet)`` and ``live.packet(packet)``; when the stream ends or breaks,
  ``rec.stream_ended(scrubbed_reason)`` and ``live.stream_ended(...)``. A looped file's seek to 0
  needs nothing: the timestamps' jump back is handled.
* loop: tracker reports ``rec.track_appeared(track_id, wall_time)`` / ``rec.track_left(track_id, wall_time)``;
  status ``rec.status()`` and ``store.disk_status()``; listing ``store.timeline(camera_id, start, end)``
  (one short SQLite query: fine on the loop, or in an executor under load); exports
  ``export_window`` / ``export_clip`` in an executor; live viewers ``viewer = live.subscribe()`` then
  ``async for chunk in viewer`` and ``viewer.close()`` when the client goes.
* camera removed: ``store.remove(camera_id)`` and ``live.close()``; shutdown: ``store.close()`` (blocking:
  it closes the open segments and joins the writer threads).
* retention runs by itself on writer thread 0 every minute (and whenever space runs short); a store made
  with ``writer_threads=0`` (tests) writes only in ``store.flush()`` and sweeps only in ``store.sweep()``.
"""

from gateway.recording.live import LiveMuxer, LiveStats, LiveViewer
from gateway.recording.playback import export_clip, export_window
from gateway.recording.recorder import CameraRecorder
from gateway.recording.records import (
    MAX_WINDOW_S, BadCameraId, DiskStatus, Export, Gap, GapReason, Mode, NoRecording, RecorderState,
    RecorderStatus, RecordingError, RecordingSettings, Segment, SettingsError, SweepReport, Timeline, WindowError,
)
from gateway.recording.store import RecordingStore, RepairReport

__all__ = [
    "MAX_WINDOW_S", "BadCameraId", "CameraRecorder", "DiskStatus", "Export", "Gap", "GapReason", "LiveMuxer",
    "LiveStats", "LiveViewer", "Mode", "NoRecording", "RecorderState", "RecorderStatus", "RecordingError",
    "RecordingSettings", "RecordingStore", "RepairReport", "Segment", "SettingsError", "SweepReport", "Timeline",
    "WindowError", "export_clip", "export_window",
]
