"""The examples in the package's docstrings hold."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest
from calabi_exporter import (
    config,
    environment,
    joblogs,
    logsignals,
    mcp_http,
    model,
    preflight,
    redact,
    refusal,
    s3export,
    status_webhook_signing,
    timeutil,
)


@pytest.mark.parametrize(
    "module",
    [
        timeutil,
        joblogs,
        redact,
        logsignals,
        status_webhook_signing,
        s3export,
        refusal,
        config,
        model,
        mcp_http,
        environment,
        preflight,
    ],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)

    assert result.attempted > 0
    assert result.failed == 0
