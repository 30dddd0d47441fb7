"""Live input for the edge: camera, video and network streams, the latest-frame policy, smoothed
per-head results and change events (``polyhead-edge live``).

- ``frames``: the bounded JPEG splitter;
- ``sources``: stdin and HTTP MJPEG, and ``open_source`` (which picks one); ``ffmpeg``: everything else;
- ``reader``: the reader thread, the latest-frame slot, lost/restored and restarts;
- ``smooth``: the time-based average and change events with hysteresis;
- ``session``: a live run's records (``LiveRun``);
- ``output``: JSON lines and the terminal status line;
- ``command``: ``polyhead-edge live`` (registered by edge/cli.py);
- ``hub`` and ``annotate``: the live page (``--serve``) and the labels drawn on a frame.
"""
