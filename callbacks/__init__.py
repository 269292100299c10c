"""Lightning callbacks for metrics and samples (installed as talkinghead.callbacks)."""
