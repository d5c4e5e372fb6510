"""Shared test settings."""

import torch

# One intra-op thread per test process: the tests' batches are tiny, and on a busy 2-core
# machine torch's default thread count made them up to 10x slower (thread contention).
torch.set_num_threads(1)
