"""Subcommands of the `talkinghead` console command beyond LightningCLI's fit/validate/test/predict."""
