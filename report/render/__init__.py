"""Rendering: report.md (``markdown``) and its plots (``plots``) from the JSON the stages wrote, and
``build.write_report`` that puts them in a folder (``python -m report RUN``). Reads files only: no
model, no TensorFlow, no stage is run from here."""
