"""evroam: serve plug-in electric vehicles wherever they charge."""

__version__ = "0.1.0"
