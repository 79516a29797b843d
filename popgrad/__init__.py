"""popgrad: numerical verification of gradient-dynamics theorems for low-rank fine-tuning."""

__version__ = "0.1.0"
