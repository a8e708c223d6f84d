"""Printing and plotting replay reports (the table on stdout, the trade-off plot)."""

from __future__ import annotations

from typing import Any


def replay_table(report: dict[str, Any]) -> str:
    target = report["target_under"]
    lines = [
        f"trace: {report['trace']}   jobs: {report['jobs']}   seconds: {report['seconds']}",
        "",
        f"{'resource':<10} {'policy':<25} {'under@default':>13} {'A/U@default':>11} {'slack':>7} {'attempts':>8}"
        f" {'A/U@' + format(target, '.1%'):>10}",
    ]
    for resource in report["population"]:
        for policy, by_resource in report["policies"].items():
            e = by_resource.get(resource)
            if not e:
                continue
            at = e["at_target"]
            star = "" if at["reached"] else f" (closest: {at['under_provisioned_fraction']:.2%})"
            lines.append(
                f"{resource:<10} {policy:<25} {e['under_provisioned_fraction']:>13.2%} {e['allocated_over_used']:>11.3f}"
                f" {e['relative_slack']:>7.1%} {e['attempts_per_job']:>8.3f} {at['allocated_over_used']:>10.3f}{star}"
            )
        pop = report["population"][resource]
        lines.append(f"{'':<10} population: {pop['kept']} jobs kept; excluded: {pop['excluded'] or 'none'}")
        if pop.get("default_request_jobs"):
            amount = report.get("settings", {}).get("default_request", {}).get(resource)
            lines.append(f"{'':<10} default request ({_quantity(resource, amount)}) for {pop['default_request_jobs']} jobs"
                         f" with no {resource} request in the trace")
        cold = report["policies"]["adaptive"].get(resource, {}).get("cold_start")
        if cold and cold.get("jobs"):
            lines.append(
                f"{'':<10} adaptive cold-start jobs: {cold['jobs']}, under-provisioned {cold['under_provisioned_fraction']:.2%}"
                f" at the default knob, A/U {cold['allocated_over_used']:.3f}"
            )
    return "\n".join(lines)


def _quantity(resource: str, amount: float | None) -> str:
    from airflow_adaptive.domain.quantities import format_cpu, format_memory

    if amount is None:
        return "?"
    if resource == "memory":
        return format_memory(amount)
    return format_cpu(amount) if resource == "cpu" else f"{amount:g}"


def replay_plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resources = list(report["population"])
    fig, axes = plt.subplots(1, len(resources), figsize=(6 * len(resources), 4.5), squeeze=False)
    for ax, resource in zip(axes[0], resources):
        for policy, by_resource in report["policies"].items():
            e = by_resource.get(resource)
            if not e:
                continue
            pts = sorted((p["under_provisioned_fraction"], p["allocated_over_used"]) for p in e["tradeoff"])
            ax.plot([max(u, 1e-4) for u, _ in pts], [a for _, a in pts], marker="o", ms=3, label=policy)
        ax.axvline(report["target_under"], color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("under-provisioned fraction (first attempt)")
        ax.set_ylabel("allocated / used (resource x time, failures charged)")
        ax.set_title(f"{report['trace']}: {resource}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def holdout_plot(profiler, holdout, path: str) -> None:
    """Predicted median and upper against observed memory (or the first resource) on the hold-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds = profiler.predict(holdout)
    target = "memory" if "memory" in preds else next(iter(preds))
    observed = holdout.run_time if target == "duration" else holdout.used[target]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(observed, preds[target]["median"], s=4, alpha=0.4, label="median")
    ax.scatter(observed, preds[target]["upper"], s=4, alpha=0.4, label=f"upper ({profiler.coverage:.0%})")
    lims = [max(1e-9, float(min(observed[observed > 0].min(), preds[target]["median"].min()))), float(max(observed.max(), preds[target]["upper"].max()))]
    ax.plot(lims, lims, color="grey", lw=1)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel(f"observed {target}"), ax.set_ylabel(f"predicted {target}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def simulate_table(report: dict[str, Any]) -> str:
    """Per resource and policy: reserved and requested over used, kills, resizes, and the
    reservation at ``static_history``'s kill count."""
    load = report["load"]
    lines = [
        f"series: {load['source']}   runs: {report['runs']}   stages: {report['stages']}   samples: {report['samples']}"
        f"   interval: {report['sampling_interval_s']:g} s   seconds: {report['seconds']}",
        f"order: {report['ordering']}; warm-up runs (no history anywhere, not scored): {report['warmup_runs']}",
        f"cleaned: {load['duplicated_timestamps']} duplicated timestamps (larger kept), {load['negative_values']} negative values (as 0)",
        "",
        f"{'resource':<11} {'policy':<15} {'margin':>6} {'reserved/used':>13} {'requested/used':>14} {'over req':>8}"
        f" {'kills':>6} {'killed runs':>11} {'resizes':>7} {'R/U@kills':>10}",
    ]
    for resource in report["resources"]:
        for policy, by_resource in report["policies"].items():
            e = by_resource[resource]
            at = e.get("at_kills") or {}
            at_text = "-" if at.get("reserved_over_used") is None else f"{at['reserved_over_used']:.3f}"
            if at and not at.get("reached"):
                at_text += f" (min {at['kills']:g} kills)"
            lines.append(
                f"{resource:<11} {policy:<15} {e['margin']:>6.2f} {_ratio(e['reserved_over_used']):>13} "
                f"{_ratio(e['requested_over_used']):>14} {e['over_request_fraction']:>8.1%} {e['kills']:>6}"
                f" {e['killed_runs']:>5} ({e['kill_fraction']:>4.1%}) {e['resizes']:>7} {at_text:>10}")
    lines.append("")
    lines.extend(f"kill -> {policy}: {text}" for policy, text in report["escalation"].items())
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def simulate_plot(report: dict[str, Any], path: str) -> None:
    """Each policy's knob sweep: reserved/used against kills, one panel per resource."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resources = report["resources"]
    fig, axes = plt.subplots(1, len(resources), figsize=(6 * len(resources), 4.5), squeeze=False)
    for ax, resource in zip(axes[0], resources):
        for policy, by_resource in report["policies"].items():
            sweep = [p for p in by_resource[resource]["sweep"] if p["reserved_over_used"] is not None]
            ax.plot([p["kills"] for p in sweep], [p["reserved_over_used"] for p in sweep], marker="o", label=policy)
        ax.set_xlabel("kills")
        ax.set_ylabel("reserved / used")
        ax.set_title(f"{resource}: margin sweep")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
