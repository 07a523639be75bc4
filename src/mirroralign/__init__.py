"""mirroralign: action understanding and embodied execution as two views of one representation."""

__version__ = "0.1.0"
