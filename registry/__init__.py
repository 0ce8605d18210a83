"""Cameras and nodes: validation, storage in Redis, catalog change feed."""

from registry.bulk import BULK_MAX_ROWS, BulkError, parse_bulk_csv, parse_bulk_json
from registry.ids import CameraIdError, centre_code, generate_camera_id, node_of_camera_id, validate_camera_id
from registry.models import (
    AnalyticsPatch,
    AnalyticsSettings,
    Camera,
    CameraCreate,
    CameraPatch,
    Location,
    error_details,
    validate_sources,
)
from registry.store import (CameraExists, CameraNotFound, CameraOwnedBelow, CameraStore, Change, CursorError,
                            StoreConflict)
from registry.urls import Source, SourceError, check_url, parse_source, redact_url, scrub, url_secrets

__all__ = [
    "BULK_MAX_ROWS",
    "AnalyticsPatch",
    "AnalyticsSettings",
    "BulkError",
    "Camera",
    "CameraCreate",
    "CameraExists",
    "CameraIdError",
    "CameraNotFound",
    "CameraOwnedBelow",
    "CameraPatch",
    "CameraStore",
    "Change",
    "CursorError",
    "Location",
    "Source",
    "SourceError",
    "StoreConflict",
    "centre_code",
    "check_url",
    "error_details",
    "generate_camera_id",
    "node_of_camera_id",
    "parse_bulk_csv",
    "parse_bulk_json",
    "parse_source",
    "redact_url",
    "scrub",
    "url_secrets",
    "validate_camera_id",
    "validate_sources",
]
