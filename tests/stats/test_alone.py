"""The measurement windows refuse to run beside a thread an earlier test left running."""
import threading

import pytest

from .tracked import tracking


def test_tracking_names_a_leftover_thread():
    stop = threading.Event()
    leftover = threading.Thread(target=stop.wait, name="leftover-server", daemon=True)
    leftover.start()
    try:
        with pytest.raises(AssertionError, match=r"(?s)before the tracker started.*earlier test"
                                                  r".*leftover-server.*in wait"):
            with tracking(1):
                pass
    finally:
        stop.set()
        leftover.join()
    with tracking(1):  # alone again
        pass


def test_tracking_names_a_thread_still_live_when_the_block_ends():
    stop = threading.Event()
    leftover = threading.Thread(target=stop.wait, name="started-in-window", daemon=True)
    try:
        with pytest.raises(AssertionError, match="(?s)when the measured block ended.*join it.*started-in-window"):
            with tracking(1):
                leftover.start()
    finally:
        stop.set()
        leftover.join()
