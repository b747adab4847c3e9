"""odpipe: labelImg annotations → records → train → evaluate → export → predict."""

from odpipe.quiet import quiet_libraries

quiet_libraries()  # before any TensorFlow import: see odpipe/quiet.py

__version__ = "0.2.0"
