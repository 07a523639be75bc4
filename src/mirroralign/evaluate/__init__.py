"""Evaluation: recognition of observed clips (any camera) and policy rollouts in the simulator."""
