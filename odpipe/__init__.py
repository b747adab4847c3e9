"""odpipe: labelImg annotations → records → train → evaluate → export → predict."""

__version__ = "0.1.0"
