"""RL fine-tuning of a policy in simulation (`mirroralign finetune`): rewards, one algorithm per module, the driver.

Stage: after `evaluate` in the import order (it rolls out with `evaluate.rollouts` and scores with the frozen
understanding model); `evaluate` never imports it, and takes its output as any `execute` run.
"""
