"""talkinghead: neural talking-head synthesis in PyTorch Lightning."""

__version__ = "0.1.0"
