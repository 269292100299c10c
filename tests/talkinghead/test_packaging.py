import importlib.metadata
import importlib.util
from importlib import resources


def test_only_the_talkinghead_namespace_is_installed():
    top_level = importlib.metadata.distribution("talkinghead").read_text("top_level.txt").split()
    assert top_level == ["talkinghead"]
    for generic in ("datamodules", "callbacks", "lightning_configs"):
        spec = importlib.util.find_spec(generic)
        # tests/datamodules may show up as a namespace package (no origin); no installed package may.
        assert spec is None or spec.origin is None, spec
        assert importlib.util.find_spec(f"talkinghead.{generic}") is not None


def test_yaml_configs_are_package_data():
    names = {p.name for p in (resources.files("talkinghead.lightning_configs") / "data").iterdir()}
    assert {"pairs.yaml", "few_shot.yaml", "person.yaml", "tiny.yaml"} <= names


def test_console_command_is_declared():
    scripts = importlib.metadata.distribution("talkinghead").entry_points.select(group="console_scripts")
    assert [(s.name, s.value) for s in scripts] == [("talkinghead", "talkinghead.cli:main")]
