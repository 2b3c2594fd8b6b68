"""multi2cap: the VggCaps dataset pipeline and the Multi2Cap audio captioning model."""

__version__ = "0.2.0"
