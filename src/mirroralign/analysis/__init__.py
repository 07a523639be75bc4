"""Alignment analysis: representation metrics, the linear probe, success vs failure, alignment over training."""
