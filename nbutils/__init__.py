"""nbutils: the fine structure that survives Neural Collapse (Yang, Steinhardt & Hu, 2023)."""

__version__ = "0.1.0"
