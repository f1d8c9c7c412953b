"""Datasets: registry of kinds, generators, the uint8 image cache, split protocols and loading."""
