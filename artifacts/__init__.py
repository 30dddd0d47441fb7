"""What the host stages share about their files: the run folder's layout (``artifacts.layout``).
Host-only; the device package (``edge``) never imports it."""
