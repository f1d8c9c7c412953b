"""Models: the open_clip backbone wrapper, prompt learners and the rank-text CLIP model."""
