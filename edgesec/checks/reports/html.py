"""The HTML report: one self-contained file (inline CSS, no scripts, no external resources), en or zh-CN.

Rendered with Jinja2 and autoescape from the canonical result; a Content-Security-Policy of
``default-src 'none'`` makes any accidental outside reference fail closed in the browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "edgesec audit report",
        "verdict": "Verdict",
        "pass": "PASS",
        "fail": "FAIL",
        "incomplete": "INCOMPLETE",
        "verdict_pass": "No failed check at or above the fail-on severity.",
        "verdict_fail": "Checks failed at or above the fail-on severity; see the findings below.",
        "verdict_incomplete": "A check errored: the verdict is incomplete.",
        "profile": "Profile",
        "host": "Host",
        "run": "Run",
        "started": "Started (UTC)",
        "duration": "Duration",
        "version": "edgesec version",
        "mode": "Mode",
        "fail_on": "Fails on",
        "frameworks": "Compliance frameworks",
        "framework": "Framework",
        "score": "Score",
        "controls": "Controls",
        "passed": "passed",
        "failed": "failed",
        "not_assessed": "not assessed",
        "how_scored": "How it is scored",
        "counts": "Findings by status",
        "severity_counts": "Failed findings by severity",
        "changes": "Changes since the last run",
        "changes_against": "Compared with run",
        "no_previous": "No earlier run to compare with.",
        "new_failures": "New failures",
        "fixed": "Fixed",
        "changed_evidence": "Changed evidence",
        "status_changes": "Other status changes",
        "changes_not_assessed": "Not assessed this run (errored or skipped; neither fixed nor failing)",
        "none": "none",
        "findings": "Findings",
        "check": "Check",
        "status": "Status",
        "severity": "Severity",
        "resource": "Resource",
        "message": "Finding",
        "evidence": "Evidence",
        "remediation": "Remediation",
        "rationale": "Why it matters",
        "waivers": "Waivers",
        "waiver": "Waiver",
        "justification": "Justification",
        "owner": "Owner",
        "approver": "Approver",
        "expires": "Expires",
        "state": "State",
        "active": "active",
        "expired": "expired",
        "days_left": "days left",
        "no_waivers": "No waivers.",
        "other_results": "Passed and not applicable",
        "blocking": "Blocking findings",
        "control_status": "Control",
        "method": "score = controls passed / controls mapped. A control passes when every mapped check that ran "
        "is PASS or WAIVED and at least one ran; FAIL, WARN or ERROR fails it; a control whose checks were all "
        "skipped or are not installed is not assessed, which counts as not passed.",
        "sev_critical": "critical",
        "sev_high": "high",
        "sev_medium": "medium",
        "sev_low": "low",
        "sev_info": "info",
    },
    "zh-CN": {
        "title": "edgesec 安全审计报告",
        "verdict": "结论",
        "pass": "通过",
        "fail": "不通过",
        "incomplete": "不完整",
        "verdict_pass": "没有达到失败阈值的检查项失败。",
        "verdict_fail": "有达到失败阈值的检查项失败，详见下方发现。",
        "verdict_incomplete": "有检查项执行出错，结论不完整。",
        "profile": "合规配置",
        "host": "主机",
        "run": "运行编号",
        "started": "开始时间（UTC）",
        "duration": "耗时",
        "version": "edgesec 版本",
        "mode": "模式",
        "fail_on": "失败阈值",
        "frameworks": "合规框架",
        "framework": "框架",
        "score": "得分",
        "controls": "控制项",
        "passed": "通过",
        "failed": "未通过",
        "not_assessed": "未评估",
        "how_scored": "评分方法",
        "counts": "按状态统计",
        "severity_counts": "按严重程度统计的失败项",
        "changes": "与上次运行相比的变化",
        "changes_against": "对比的运行",
        "no_previous": "没有可对比的历史运行。",
        "new_failures": "新增失败",
        "fixed": "已修复",
        "changed_evidence": "证据变化",
        "status_changes": "其他状态变化",
        "changes_not_assessed": "本次未评估（出错或跳过；既非已修复也非失败）",
        "none": "无",
        "findings": "发现",
        "check": "检查项",
        "status": "状态",
        "severity": "严重程度",
        "resource": "对象",
        "message": "发现内容",
        "evidence": "证据",
        "remediation": "整改建议",
        "rationale": "原因",
        "waivers": "豁免",
        "waiver": "豁免",
        "justification": "理由",
        "owner": "负责人",
        "approver": "批准人",
        "expires": "到期日",
        "state": "状态",
        "active": "有效",
        "expired": "已过期",
        "days_left": "剩余天数",
        "no_waivers": "没有豁免。",
        "other_results": "通过及不适用的检查",
        "blocking": "导致失败的发现",
        "control_status": "控制项",
        "method": "得分 = 通过的控制项数 / 映射的控制项数。控制项所映射且已执行的检查全部为“通过”或“豁免”（且至少执行了一项）时，"
        "该控制项通过；任一检查为“不通过”、“警告”或“错误”时，该控制项未通过；所映射的检查全部跳过或未安装时，"
        "该控制项为“未评估”，按未通过计。",
        "sev_critical": "严重",
        "sev_high": "高",
        "sev_medium": "中",
        "sev_low": "低",
        "sev_info": "信息",
    },
}

_env = Environment(
    loader=PackageLoader("edgesec.checks.reports", "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt_evidence(ev: Mapping[str, Any]) -> list[tuple[str, str]]:
    import json

    out = []
    for k, v in ev.items():
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True, indent=1)
        out.append((str(k), text[:4000]))
    return out


def render(result: Mapping[str, Any], lang: str = "en") -> str:
    if lang not in STRINGS:
        lang = "en"
    t = STRINGS[lang]
    from edgesec.checks.reports.i18n import translate_result

    result, _missing = translate_result(result, lang)  # the zh-CN test fails on any missing string
    checks = result["checks"]
    problem = [c for c in checks if c["status"] in ("FAIL", "ERROR", "WARN", "WAIVED")]
    order = {"ERROR": 0, "FAIL": 1, "WARN": 2, "WAIVED": 3}
    sev_order = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
    problem.sort(key=lambda c: (order[c["status"]], sev_order.get(c["severity"], 5), c["id"]))
    rest = [c for c in checks if c not in problem]
    tpl = _env.get_template("report.html.j2")
    return tpl.render(
        r=result,
        t=t,
        lang=lang,
        problem=problem,
        rest=rest,
        fmt_evidence=_fmt_evidence,
        zh=lang == "zh-CN",
    )
