"""The README documents every rule parameter with its default."""

from pathlib import Path

from riskengine.core.rules import PARAMETERS

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_readme_documents_every_rule_parameter_with_its_default():
    for name, parameter in PARAMETERS.items():
        assert f"| `{name}` | `{parameter.default}` |" in README, f"{name} missing from README's rules table"
