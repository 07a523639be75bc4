"""Alignment analysis: representation metrics, the linear probe, statistics across seeds and episodes."""
