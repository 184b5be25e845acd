"""Session-wide pytest hooks."""

import asyncio

from riskengine.settings import Settings
from riskengine_devtools.stack import build_services
from riskengine_devtools.stack.runner import Inspection, inspect


def pytest_report_header(config):
    """Name the real servers the integration tests talk to, with their versions and state."""
    services = build_services(Settings.from_env())

    async def inspect_all() -> list[Inspection]:
        return [await inspect(service) for service in services]

    lines = ["local stack (riskengine stack status):"]
    for service, found in zip(services, asyncio.run(inspect_all()), strict=True):
        pid = f", pid {found.pid}" if found.pid else ""
        lines.append(f"  {service.name:9} {service.product:24} {service.address}  {found.state.value}{pid}")
    return lines
