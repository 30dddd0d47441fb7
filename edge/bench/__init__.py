"""The on-device benchmark: interleaved rounds in fresh worker processes, the machine's state,
bootstrap intervals for every ratio, and bench.json's shape."""
