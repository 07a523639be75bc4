"""Networks: the understanding model, the execution policy, the alignment head, the frozen text encoder."""
