"""The Elasticsearch stack service without a server: addresses, rendered config, command, unpacking."""

from __future__ import annotations

import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from riskengine.settings import Settings
from riskengine_devtools.stack import elasticsearch
from riskengine_devtools.stack.elasticsearch import Elasticsearch, elasticsearch_yml, unpack_zip
from riskengine_devtools.stack.service import Address, StackConfigError, StackPaths


def _yml(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_http_comes_from_the_setting_and_transport_is_100_above(
    settings: Settings, paths: StackPaths
) -> None:
    service = Elasticsearch(replace(settings, elasticsearch_url="http://localhost:9250"), paths)
    assert service.address == Address("127.0.0.1", 9250)
    assert service.bound_addresses == (Address("127.0.0.1", 9250), Address("127.0.0.1", 9350))


def test_a_remote_elasticsearch_is_not_served(settings: Settings, paths: StackPaths) -> None:
    service = Elasticsearch(replace(settings, elasticsearch_url="http://search.example:9200"), paths)
    with pytest.raises(StackConfigError, match="RISKENGINE_ELASTICSEARCH_URL"):
        _ = service.address


def test_the_config_is_one_loopback_node_with_folders_under_the_stack(tmp_path: Path) -> None:
    text = elasticsearch_yml(
        Address("127.0.0.1", 9200),
        Address("127.0.0.1", 9300),
        tmp_path / "d",
        tmp_path / "l",
        has_security=True,
    )
    config = _yml(text)
    assert config["discovery.type"] == "single-node"
    assert config["network.host"] == "127.0.0.1"
    assert (config["http.port"], config["transport.port"]) == ("9200", "9300")
    assert (config["path.data"], config["path.logs"]) == (str(tmp_path / "d"), str(tmp_path / "l"))
    assert config["xpack.security.enabled"] == "false"
    assert config["cluster.routing.allocation.disk.threshold_enabled"] == "false"


def test_security_is_only_configured_when_its_module_exists(tmp_path: Path) -> None:
    text = elasticsearch_yml(
        Address("127.0.0.1", 9200), Address("127.0.0.1", 9300), tmp_path, tmp_path, has_security=False
    )
    assert "xpack.security" not in text


def test_the_launcher_runs_under_a_parent_that_keeps_the_recorded_command_line(
    settings: Settings, paths: StackPaths
) -> None:
    service = Elasticsearch(settings, paths)
    launcher = str(paths.cache_dir / f"elasticsearch-{elasticsearch.VERSION}" / "bin" / "elasticsearch")
    assert service.command() == ["timeout", "0", launcher]


def test_the_server_owns_its_config_data_and_log_folders(settings: Settings, paths: StackPaths) -> None:
    service = Elasticsearch(settings, paths)
    assert service.system_user == "riskengine-es"
    assert service.writable_dirs == (paths.conf / "elastic", paths.data / "elastic", paths.logs / "elastic")


def test_the_environment_sets_the_jdk_the_config_folder_and_the_heap(
    settings: Settings, paths: StackPaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    java = tmp_path / "jdk-25" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.touch()
    monkeypatch.setattr(elasticsearch, "find_java", lambda minimum: str(java) if minimum >= 21 else "old")
    service = Elasticsearch(settings, paths)
    assert service.environment() == {
        "ES_JAVA_HOME": str(tmp_path / "jdk-25"),
        "ES_PATH_CONF": str(paths.stack_dir / "conf" / "elastic"),
        "ES_JAVA_OPTS": "-Xms768m -Xmx768m",
    }


def test_unpacking_drops_the_top_folder_and_keeps_the_executable_bit(tmp_path: Path) -> None:
    archive = tmp_path / "es.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        script = zipfile.ZipInfo("elasticsearch-9.9.9/bin/elasticsearch")
        script.external_attr = (stat.S_IFREG | 0o755) << 16
        bundle.writestr(script, "#!/bin/sh\n")
        bundle.writestr("elasticsearch-9.9.9/config/jvm.options", "-Xss1m\n")
        bundle.writestr("elasticsearch-9.9.9/../escape", "no")
    unpack_zip(archive, tmp_path / "home")
    launcher = tmp_path / "home" / "bin" / "elasticsearch"
    assert launcher.stat().st_mode & 0o111
    assert (tmp_path / "home" / "config" / "jvm.options").read_text() == "-Xss1m\n"
    assert not (tmp_path / "escape").exists()


async def test_prepare_renders_the_config_beside_the_distributions_files(
    settings: Settings, paths: StackPaths
) -> None:
    service = Elasticsearch(settings, paths)
    for name in ("jvm.options", "log4j2.properties"):
        (service.home / "config").mkdir(parents=True, exist_ok=True)
        (service.home / "config" / name).write_text(name)
    (service.home / "modules" / "x-pack-security").mkdir(parents=True)
    await service.prepare()
    assert (service.conf_dir / "jvm.options").read_text() == "jvm.options"
    config = _yml((service.conf_dir / "elasticsearch.yml").read_text())
    assert config["path.data"] == str(service.data_dir)
    assert config["path.logs"] == str(paths.logs / "elastic")
    assert config["xpack.security.enabled"] == "false"
