"""Expert data: generation, the on-disk store, torch datasets."""
