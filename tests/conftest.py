"""Engine tests run offline: no hub look-ups (a hub id must fail fast, not wait on the network)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
