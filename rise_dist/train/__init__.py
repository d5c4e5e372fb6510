"""Training: the plain PyTorch loop (loop.py), its checkpoints, and the Ray Train wrapper."""
