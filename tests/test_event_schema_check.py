"""The runtime check of events from elsewhere (fastjsonschema, compiled) agrees with the reference validator."""

from __future__ import annotations

import time

import jsonschema
import pytest

from analytics.events import Event, Origin, event_error, event_schema, iso_ms

GOOD = Event(type="detection", camera_id="45010200001320000001", node="450102", ts=iso_ms(time.time()),
             origin=Origin("450102", "gw"), id="450102-1796059000427-0", label="person", score=0.9,
             box=(0.1, 0.2, 0.3, 0.4), track_id=3, phase="start").to_dict()
BAD = [
    {**GOOD, "score": "high"}, {**GOOD, "score": 1.5}, {**GOOD, "type": "nonsense"}, {**GOOD, "camera_id": "123"},
    {**GOOD, "node": "4501020"}, {**GOOD, "ts": "yesterday"}, {**GOOD, "origin": {"node": "450102"}},
    {**GOOD, "box": [0.1, 0.2]}, {**GOOD, "extra_field": 1}, {k: v for k, v in GOOD.items() if k != "origin"},
    {**GOOD, "id": "x-1-0"}, {**GOOD, "track_id": "3"}, [GOOD], "event",
]


def test_a_good_event_passes_both():
    jsonschema.validate(GOOD, event_schema())
    assert event_error(GOOD) is None


@pytest.mark.parametrize("bad", BAD, ids=range(len(BAD)))
def test_what_the_reference_validator_refuses_is_refused(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, event_schema())
    assert event_error(bad) is not None
