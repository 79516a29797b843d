"""Dayi & Chen, *Low-rank fine-tuning lies between lazy training and feature learning* (COLT 2025)."""
