"""Live input: camera, video and stream sources, the latest-frame policy, smoothed results and the live page."""
