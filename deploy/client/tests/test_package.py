import re
from pathlib import Path

from credproxy_client import __version__
from credproxy_client.provider import get_provider_info
from credproxy_client.session import USER_AGENT

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_one_version_everywhere():
    declared = re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(), re.M).group(1)
    assert __version__ == declared
    assert get_provider_info()["versions"] == [declared]
    assert USER_AGENT.startswith(f"credproxy-client/{declared} ")


def test_extras_and_the_provider_entry_point_are_declared():
    text = PYPROJECT.read_text()
    assert re.search(r"^airflow = \[.*apache-airflow", text, re.M)
    assert re.search(r"^beam = \[.*apache-beam", text, re.M)
    assert 'provider_info = "credproxy_client.provider:get_provider_info"' in text
