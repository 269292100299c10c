"""Lightning callbacks for metrics and samples (installed as talkinghead.callbacks)."""

from talkinghead.callbacks.media import ValidationMedia, write_mp4
from talkinghead.callbacks.metrics import ValidationMetrics
from talkinghead.callbacks.samples import SampleGrid, grid_image
from talkinghead.callbacks.throughput import Throughput

__all__ = ["SampleGrid", "grid_image", "ValidationMetrics", "ValidationMedia", "write_mp4", "Throughput"]
