"""tinylm: tiny language models for microcontrollers."""
__version__ = "0.1.0"
