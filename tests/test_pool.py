"""DetectorPool: real model on worker threads, awaited from the loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from analytics.detector import ModelError
from analytics.pool import DetectorPool

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def street_frame(street_clip) -> np.ndarray:
    import av

    with av.open(str(street_clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 25:  # t = 1 s: cars on the motorway
                return frame.to_ndarray(format="bgr24")
    raise AssertionError("clip too short")


async def test_concurrent_detect_on_worker_threads(model_path, street_frame):
    pool = DetectorPool(model_path, workers=2)
    try:
        assert pool.name == "yolox:yolox_nano" and "car" in pool.labels
        loop_thread = threading.get_ident()
        seen: list[str] = []
        orig = pool._run

        def spy(*args):
            seen.append(threading.current_thread().name)
            assert threading.get_ident() != loop_thread
            return orig(*args)

        pool._run = spy  # type: ignore[method-assign]
        ticks = 0

        async def ticker():
            # the loop stays free while the detector runs
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        a, b = await asyncio.gather(
            pool.detect(street_frame, 0.3, frozenset({"car"})),
            pool.detect(street_frame, 0.3),
        )
        t.cancel()
        assert a and {d.label for d in a} == {"car"}
        assert len(b) >= len(a)
        assert len(seen) == 2 and all(name.startswith("detector") for name in seen)
        assert ticks >= 1
        stats = pool.stats()
        assert stats.inferences == 2 and stats.in_flight == 0 and stats.errors == 0
        assert stats.inference_s > 0 and stats.mean_ms == pytest.approx(stats.inference_s * 500)
    finally:
        pool.close()
    with pytest.raises(RuntimeError):
        await pool.detect(street_frame)


async def test_errors_are_counted_and_raised(model_path):
    with DetectorPool(model_path, workers=1) as pool:
        with pytest.raises(ValueError):
            await pool.detect(np.zeros((8, 8), np.uint8))
        s = pool.stats()
        assert (s.inferences, s.errors, s.in_flight) == (1, 1, 0)


async def test_cancelled_callers_do_not_leak_in_flight(model_path, street_frame):
    with DetectorPool(model_path, workers=1) as pool:
        tasks = [asyncio.create_task(pool.detect(street_frame)) for _ in range(6)]
        await asyncio.sleep(0)
        for t in tasks[1:]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(200):
            if pool.stats().in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.stats().in_flight == 0
        assert 1 <= pool.stats().inferences <= 6


def test_bad_model_fails_at_construction(tmp_path):
    with pytest.raises(ModelError):
        DetectorPool(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model" * 100)
    with pytest.raises(ModelError):
        DetectorPool(bad, workers=2)
