"""fr_lib: the face-recognition library (data, align, losses, train, embed, metrics, plots, recognise)."""
__version__ = "0.1.0"
