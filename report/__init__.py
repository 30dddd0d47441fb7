"""polyhead's report room, by job (importing it does no work):

- orchestration: ``pipeline`` (``make all``: data -> train -> convert -> bench -> predictions ->
  report, asking each stage whether it is done) and ``predictions`` (its predictions stage);
- ``render/``: report.md and plots from the stages' JSON (``python -m report RUN``);
- ``experiments/``: ``paper`` (``make paper``) and ``compare`` (``make compare``);
- ``benchmarks/``: ``suite`` (``make bench``) and the decode and memory profiles.

A new study goes in ``experiments/``, a new measurement suite in ``benchmarks/``.
"""
