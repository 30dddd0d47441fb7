"""Measurement suites beyond one run's bench.json.

- ``suite``: the performance suite with intervals for every ratio (``make bench``);
- ``decode_profile``: where ``load_image``'s time goes;
- ``memory_profile``: the edge worker's RSS step by step.
"""
