"""How any stage of the pipeline runs: config, processes, files, signals, the training loop and the per-image
runner. It knows nothing of CAMs or datasets and imports nothing else of the project."""
