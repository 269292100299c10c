"""Shards, synthetic talking heads and the DataModules that stream them (installed as talkinghead.datamodules)."""
