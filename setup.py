"""Maps the top-level folders into the talkinghead namespace.

datamodules/, callbacks/ and lightning_configs/ live at the repository top level for readability but install as
talkinghead.datamodules, talkinghead.callbacks and talkinghead.lightning_configs, so nothing generic is installed
as a top-level package.
"""

from setuptools import setup

PACKAGE_DIR = {
    "talkinghead": "talkinghead",
    "talkinghead.datamodules": "datamodules",
    "talkinghead.callbacks": "callbacks",
    "talkinghead.lightning_configs": "lightning_configs",
}
SUBPACKAGES = [
    "talkinghead.networks",
    "talkinghead.losses",
    "talkinghead.lightning",
    "talkinghead.commands",
    "talkinghead.face",
    "talkinghead.preprocess",
    "talkinghead.metrics",
    "talkinghead.assets",
]

setup(
    packages=[*PACKAGE_DIR, *SUBPACKAGES],
    package_dir=PACKAGE_DIR,
    package_data={"talkinghead.lightning_configs": ["*.yaml", "*/*.yaml"], "talkinghead.assets": ["*.ckpt", "*.safetensors"]},
)
