"""Data layer: real list files, the decoded cache, the synthetic benchmark, protocols."""
