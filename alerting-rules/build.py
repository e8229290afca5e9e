"""The alert rules with your deployment's links, as Prometheus rules files or a Kubernetes PrometheusRule.

Two rules files: ``calabi-sync.rules.yml``, written by hand, and
``calabi-slo.rules.yml``, the error-budget and freshness SLO rules that this
script writes from its table below (``BURN_RATES`` and the constants beside
it). Each alert links its runbook section (``runbook_url``) and a Grafana
dashboard (``dashboard_url``); the committed files use the defaults below,
right for the compose stack read next to this repository. Give the bases your
team uses and this writes the same rules with those links (comments kept), or
the one PrometheusRule, holding both files' groups, that the Prometheus
Operator loads. From the project root::

    python alerting-rules/build.py --runbook-url https://wiki.example.com/calabi/runbook \\
        --grafana-url https://grafana.example.com -o my-calabi-sync.rules.yml
    python alerting-rules/build.py --slo --runbook-url https://wiki.example.com/calabi/runbook \\
        --grafana-url https://grafana.example.com -o my-calabi-slo.rules.yml
    python alerting-rules/build.py --kubernetes --grafana-url https://grafana.example.com \\
        -o deploy/kubernetes/base/prometheusrule.yaml

With no link option, ``--slo`` writes the committed SLO file (a test checks it)::

    python alerting-rules/build.py --slo -o alerting-rules/calabi-slo.rules.yml

``--null-alertmanager`` writes ``alertmanager-null.yml``, the Alertmanager
configuration without notifications (see :func:`null_alertmanager`)::

    python alerting-rules/build.py --null-alertmanager -o alerting-rules/alertmanager-null.yml

Needs PyYAML only. The Kubernetes manifests' PrometheusRule is this script's
output with the defaults; a test fails when it drifts from the rules files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml

RULES: Final = Path(__file__).resolve().parent / "calabi-sync.rules.yml"
SLO_RULES: Final = RULES.parent / "calabi-slo.rules.yml"
ALERTMANAGER: Final = RULES.parent / "alertmanager.yml"
NULL_ALERTMANAGER: Final = RULES.parent / "alertmanager-null.yml"
#: The runbook as the committed rules link it: its path in this repository (``#`` and the alert's name, lower case).
DEFAULT_RUNBOOK_URL: Final = "docs/runbook.md"
#: Grafana as the compose stack publishes it.
DEFAULT_GRAFANA_URL: Final = "http://localhost:3000"
#: The PrometheusRule's name and labels (add the label your Prometheus' ruleSelector wants in an overlay).
RESOURCE_NAME: Final = "calabi-connect-exporter"
RESOURCE_LABELS: Final = {
    "app.kubernetes.io/name": "calabi-connect-exporter",
    "app.kubernetes.io/component": "alerting",
}


class BurnRate(NamedTuple):
    """One window pair of the error-budget alert: it fires while both windows fail ``factor`` times too often.

    (A named tuple rather than a dataclass: the tests and ``deploy/kubernetes/build.py`` load this file
    by path, outside ``sys.modules``, where dataclasses cannot be made.)
    """

    long: str
    short: str
    factor: float
    severity: str


#: The multiwindow, multi-burn-rate alerts of Google's SRE workbook ("Alerting on SLOs") for a 30-day
#: budget: 2 % of the budget spent in an hour or 5 % in six hours pages; 10 % in a day or in three days
#: is a ticket. The short window (a twelfth of the long one) ends the alert soon after the burn stops.
BURN_RATES: Final = (
    BurnRate("1h", "5m", 14.4, "critical"),
    BurnRate("6h", "30m", 6, "critical"),
    BurnRate("1d", "2h", 3, "warning"),
    BurnRate("3d", "6h", 1, "warning"),
)
#: The period the error budget and the freshness ratio are counted over.
SLO_PERIOD: Final = "30d"
#: A burn also needs this many failed and finished jobs in its long window: one failure of an hourly
#: connection is a 100 % error ratio over an hour, yet tells nothing the consecutive-failure alert does not.
MIN_FAILED_JOBS: Final = 2
MIN_FINISHED_JOBS: Final = 3
#: The 30-day rules read 30 days of samples per series: every 3 minutes is often enough for a 30-day
#: figure, and within the 5-minute lookback of the queries that read it.
SLO_PERIOD_INTERVAL: Final = "3m"

_RUNBOOK_LINE: Final = re.compile(r"^(\s+runbook_url: )" + re.escape(DEFAULT_RUNBOOK_URL) + "#", re.MULTILINE)
_DASHBOARD_LINE: Final = re.compile(r'^(\s+dashboard_url: ")' + re.escape(DEFAULT_GRAFANA_URL) + "/", re.MULTILINE)


def base_url(value: str) -> str:
    """A base URL as given, without a trailing slash; nothing that would break the YAML or the link."""
    text = value.strip().rstrip("/")
    if not text or re.search(r"[\s\"'#?{}]", text):
        raise argparse.ArgumentTypeError(f"must be a URL without spaces, quotes, '#', '?' or braces (got {value!r})")
    return text


def rules_text(
    runbook_url: str = DEFAULT_RUNBOOK_URL, grafana_url: str = DEFAULT_GRAFANA_URL, *, slo: bool = False
) -> str:
    """A rules file (``calabi-sync.rules.yml``, or with ``slo`` the SLO rules) with its links on the given bases."""
    name, text = (SLO_RULES.name, slo_rules()) if slo else (RULES.name, RULES.read_text(encoding="utf-8"))
    alerts = sum(1 for rule in _rules(yaml.safe_load(text)) if "alert" in rule)
    text, runbooks = _RUNBOOK_LINE.subn(lambda m: f"{m.group(1)}{runbook_url}#", text)
    text, dashboards = _DASHBOARD_LINE.subn(lambda m: f"{m.group(1)}{grafana_url}/", text)
    if not runbooks == dashboards == alerts:
        raise SystemExit(f"{name}: {alerts} alerts but {runbooks} runbook and {dashboards} dashboard links")
    return text


def prometheus_rule(runbook_url: str = DEFAULT_RUNBOOK_URL, grafana_url: str = DEFAULT_GRAFANA_URL) -> str:
    """Both rules files' groups in one ``monitoring.coreos.com/v1`` PrometheusRule."""
    groups = [
        group
        for slo in (False, True)
        for group in yaml.safe_load(rules_text(runbook_url, grafana_url, slo=slo))["groups"]
    ]
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": RESOURCE_NAME, "labels": RESOURCE_LABELS},
        "spec": {"groups": groups},
    }
    header = (
        "# Generated by alerting-rules/build.py from alerting-rules/calabi-sync.rules.yml and its SLO table\n"
        "# (alerting-rules/calabi-slo.rules.yml); do not edit.\n"
        f"# Links: runbook {runbook_url}, Grafana {grafana_url}.\n"
    )
    return header + yaml.dump(resource, Dumper=BlockDumper, sort_keys=False, allow_unicode=True, width=1000)


def null_alertmanager() -> str:
    """``alertmanager.yml`` without notifications: the same routes and inhibit rules, receivers with no channel.

    For a stack whose channels are not set up yet (``ALERTMANAGER_CONFIG=alertmanager-null.yml``):
    alerts are grouped, inhibited and shown in Alertmanager's UI and API exactly as they would be
    notified, and nothing is sent, so no secret file is needed.
    """
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    null = {
        "route": config["route"],
        "inhibit_rules": config["inhibit_rules"],
        "receivers": [{"name": receiver["name"]} for receiver in config["receivers"]],
    }
    header = (
        "# Generated by alerting-rules/build.py from alerting-rules/alertmanager.yml; do not edit.\n"
        "# Alertmanager without notifications: the same routes and inhibit rules, receivers without a channel,\n"
        "# so alerts show in its UI and API and nothing is sent. docker-compose.yml runs it with\n"
        "# ALERTMANAGER_CONFIG=alertmanager-null.yml in .env, until the secrets of alertmanager.yml are in place.\n"
    )
    return header + yaml.dump(null, Dumper=BlockDumper, sort_keys=False, allow_unicode=True, width=1000)


def slo_rules() -> str:
    """``calabi-slo.rules.yml``: per-connection error ratios, error budget and freshness, and the burn alerts.

    Written as text rather than dumped, so that it reads like the hand-written file: comments,
    expressions as blocks, annotations in the same quoting (which the link rewriting relies on).
    """
    windows = sorted({w for rate in BURN_RATES for w in (rate.long, rate.short)}, key=_seconds)
    lines = [
        "# Generated by alerting-rules/build.py from its SLO table (BURN_RATES and the constants beside it);",
        "# do not edit: python alerting-rules/build.py --slo -o alerting-rules/calabi-slo.rules.yml",
        "# Per-connection SLOs over calabi_sync_jobs_total, calabi_sync_slo_objective and the overdue threshold;",
        "# unit tests in calabi-slo.tests.yml.",
        "groups:",
        "  - name: calabi-slo-recording",
        "    rules:",
        "      # Finished jobs (succeeded or failed; cancelled ones are left out) and failed jobs per window, and",
        "      # their ratio: a ratio of sums, with no sample while the connection finished no job in the window.",
        *(line for window in windows for line in _error_ratio_rules(window)),
        "      # Freshness SLI: 1 while the latest success is within the connection's overdue threshold, else 0;",
        "      # no sample for a connection without a threshold (too little history to know its rhythm).",
        "      - record: connection:calabi_sync_fresh:bool",
        "        expr: |",
        "          (time() - max by (connection) (calabi_sync_last_success_timestamp_seconds))",
        "            <= bool on (connection) max by (connection) (calabi_sync_overdue_threshold_seconds)",
        "",
        "  - name: calabi-slo-period",
        "    # The period's rules read all its samples: evaluated less often than the burn windows.",
        f"    interval: {SLO_PERIOD_INTERVAL}",
        "    rules:",
        *_error_ratio_rules(SLO_PERIOD),
        "      # Share of the error budget left: 1 untouched, 0 spent, below 0 overspent.",
        f"      - record: connection:calabi_sync_error_budget:remaining{SLO_PERIOD}",
        "        expr: |",
        f"          1 - connection:calabi_sync_job_errors:ratio{SLO_PERIOD}",
        "            / on (connection) (1 - max by (connection) (calabi_sync_slo_objective))",
        "      # Share of the period's evaluations at which the connection was fresh.",
        f"      - record: connection:calabi_sync_fresh:ratio{SLO_PERIOD}",
        f"        expr: avg_over_time(connection:calabi_sync_fresh:bool[{SLO_PERIOD}])",
        "",
        "  - name: calabi-slo-alerts",
        "    rules:",
        *(line for rate in BURN_RATES for line in _burn_alert(rate)),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _error_ratio_rules(window: str) -> list[str]:
    return [
        f"      - record: connection:calabi_sync_jobs_finished:increase{window}",
        f'        expr: sum by (connection) (increase(calabi_sync_jobs_total{{status=~"succeeded|failed"}}[{window}]))',
        f"      - record: connection:calabi_sync_jobs_failed:increase{window}",
        f'        expr: sum by (connection) (increase(calabi_sync_jobs_total{{status="failed"}}[{window}]))',
        f"      - record: connection:calabi_sync_job_errors:ratio{window}",
        "        expr: |",
        f"          connection:calabi_sync_jobs_failed:increase{window}",
        f"            / (connection:calabi_sync_jobs_finished:increase{window} > 0)",
    ]


#: One rule of CalabiSyncErrorBudgetBurn; <name> placeholders are filled by :func:`_burn_alert`.
_BURN_ALERT: Final = """\
      - alert: CalabiSyncErrorBudgetBurn
        # <Kind>: <share> % of the <period> error budget spent in <long> (burn rate <factor>), still burning
        # over the last <short>, with at least <min_failed> failed and <min_finished> finished jobs in <long>.
        # No `for`: the short window already confirms the burn, and ends the alert soon after it stops.
        expr: |
          connection:calabi_sync_job_errors:ratio<long>
              > on (connection) (<factor> * (1 - max by (connection) (calabi_sync_slo_objective)))
            and on (connection)
          connection:calabi_sync_job_errors:ratio<short>
              > on (connection) (<factor> * (1 - max by (connection) (calabi_sync_slo_objective)))
            and on (connection)
          connection:calabi_sync_jobs_failed:increase<long> >= <min_failed>
            and on (connection)
          connection:calabi_sync_jobs_finished:increase<long> >= <min_finished>
        labels:
          severity: <severity>
          window: <long>/<short>
        annotations:
          summary: "{{ $value | humanizePercentage }} of syncs failed over <long>: {{ $labels.connection }}"
          description: >-
            {{ $labels.connection }} failed {{ $value | humanizePercentage }} of its finished jobs over the last
            <long> and over the last <short>: its error budget (objective {{ with printf
            "max(calabi_sync_slo_objective{connection=%q})" $labels.connection | query }}{{ . | first | value
            | humanizePercentage }}{{ end }}) burns at a rate over <factor>, spent in under <lasts> at this pace.
          runbook_url: docs/runbook.md#calabisyncerrorbudgetburn
          dashboard_url: "<dashboard>"
"""
_SYNC_JOBS_DASHBOARD: Final = (
    DEFAULT_GRAFANA_URL + "/d/calabi-sync-jobs/calabi-sync-jobs?var-connection={{ $labels.connection | urlquery }}"
)


def _burn_alert(rate: BurnRate) -> list[str]:
    """One window pair's rule of CalabiSyncErrorBudgetBurn."""
    period = _seconds(SLO_PERIOD)
    values = {
        "Kind": "Pages" if rate.severity == "critical" else "A ticket",
        "share": f"{_seconds(rate.long) * rate.factor / period * 100:g}",
        "period": f"{period // 86400}-day",
        "long": rate.long,
        "short": rate.short,
        "factor": f"{rate.factor:g}",
        "min_failed": str(MIN_FAILED_JOBS),
        "min_finished": str(MIN_FINISHED_JOBS),
        "severity": rate.severity,
        "lasts": _duration(period / rate.factor),
        "dashboard": _SYNC_JOBS_DASHBOARD,
    }
    text = re.sub(r"<(\w+)>", lambda m: values[m.group(1)], _BURN_ALERT)
    return [*text.splitlines(), ""]


def _seconds(window: str) -> int:
    """A Prometheus duration of one unit in seconds.

    >>> _seconds("30m"), _seconds("6h"), _seconds("3d")
    (1800, 21600, 259200)
    """
    return int(window[:-1]) * {"m": 60, "h": 3600, "d": 86400}[window[-1]]


def _duration(seconds: float) -> str:
    """Hours below three days, else days, as the alerts' descriptions say them.

    >>> _duration(180000), _duration(432000)
    ('50 hours', '5 days')
    """
    return f"{seconds / 3600:g} hours" if seconds < 3 * 86400 else f"{seconds / 86400:g} days"


def _rules(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in document["groups"] for rule in group["rules"]]


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (expressions, dashboards' JSON) as ``|`` blocks, readable in review."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


BlockDumper.add_representer(str, _string)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runbook-url", type=base_url, default=DEFAULT_RUNBOOK_URL, help="the runbook's URL")
    parser.add_argument("--grafana-url", type=base_url, default=DEFAULT_GRAFANA_URL, help="Grafana's base URL")
    parser.add_argument("--slo", action="store_true", help=f"write {SLO_RULES.name}, from the SLO table")
    parser.add_argument("--kubernetes", action="store_true", help="write one PrometheusRule with both rules files")
    parser.add_argument(
        "--null-alertmanager",
        action="store_true",
        help=f"write {NULL_ALERTMANAGER.name}: {ALERTMANAGER.name} without notifications",
    )
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    if args.null_alertmanager:
        text = null_alertmanager()
    elif args.kubernetes:
        text = prometheus_rule(args.runbook_url, args.grafana_url)
    else:
        text = rules_text(args.runbook_url, args.grafana_url, slo=args.slo)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
