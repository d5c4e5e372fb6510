"""rise-dist: RiSe (AsyIRM + MMSD) for generalized multimodal face anti-spoofing, on Ray."""

__version__ = "0.1.0"
