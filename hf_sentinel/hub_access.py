"""Is the Hugging Face Hub reachable? Asked once per process, so offline runs fail over in milliseconds.

``datasets.load_dataset`` retries an unreachable Hub for ~25 s before giving up; loaders that have a local
fallback ask here first instead.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set or a TCP connection to the Hub endpoint fails."""
    if any(os.environ.get(name, "0") not in ("0", "") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
