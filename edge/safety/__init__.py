"""Untrusted files stay untrusted: a bounds-checked flatbuffer reader, the semantic model check,
known runtime crashes, the limited child probe, safe paths and signed deployments."""
