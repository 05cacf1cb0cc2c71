"""The anomaly page: the verdict, each anomaly's explanation, each cycle's steps and picture."""

from __future__ import annotations

from html import escape
from typing import Any


def cycle_page(result: dict[str, Any], title: str = "") -> str:
    """One HTML page: the verdict, each anomaly's explanation, each cycle's steps and picture."""
    parts = [f"<!doctype html><meta charset=utf-8><title>{escape(title)} — transactional check</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto}"
             "pre{background:#f6f6f6;padding:.5em}li{margin:.2em 0}</style>",
             f"<h1>{escape(title)}: {'valid' if result['valid'] is True else result['valid']}</h1>",
             f"<p>model {escape(result['model'])}; checked for {escape(', '.join(result['consistency_models']))}"
             f"; transactions: {escape(str(result['txns']))}</p>"]
    if result["not"]:
        parts.append(f"<p><b>Not {escape(', '.join(result['not']))}</b>"
                     + (f" (nor {escape(', '.join(result['also_not']))})" if result["also_not"] else "")
                     + "</p>")
    for kind in result["anomaly_types"]:
        parts.append(f"<h2>{escape(kind)} ({result['counts'][kind]})</h2>")
        for inst in result["anomalies"][kind]:
            if "steps" in inst:
                parts.append(f"<h3>{escape(' → '.join(inst['cycle']))}</h3><ol>")
                parts.extend(f"<li>{escape(s['explanation'])}</li>" for s in inst["steps"])
                parts.append("</ol><pre>" + escape("\n".join(inst["txns"].values())) + "</pre>")
                if "svg" in inst:
                    parts.append(inst["svg"])
            else:
                parts.append(f"<p>{escape(inst['explanation'])}</p>")
                if "svg" in inst:
                    parts.append(inst["svg"])
    if not result["anomaly_types"]:
        parts.append(f"<p>{escape(result['explanation'])}</p>")
    return "\n".join(parts)
