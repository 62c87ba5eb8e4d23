"""Keras implementations of zoo meta-architectures (CenterNet) and their building blocks."""
