"""Comparing runs where MLflow's UI stops: a terminal table of any runs (only the keys that differ),
mean ± spread over seeds, and one self-contained HTML page with every run's final pictures side
by side (no 10-run cap) and each metric's curves of all runs in one chart.

Pure: `RunView`s (plain values, gathered from the store by `vaelab.tracking.readback`) in, text
out. Pictures are embedded as data URIs, so the page opens from a file, an artifact view or a mail.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

OBJECTIVE = "test/loss"
FINAL_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "test/probe_acc")
CURVES = ("train/loss", "test/loss", "test/recon", "test/kl", "beta")
PICTURES = ("reconstructions", "samples", "latent_space", "manifold")
SEED = "trainer.seed"


@dataclass
class RunView:
    """One run as the report shows it."""

    run_id: str
    name: str
    status: str
    experiment: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    pictures: dict[str, bytes] = field(default_factory=dict)  # key -> PNG of the last step
    error: str = ""
    link: str = ""


def differing(runs: Sequence[RunView]) -> list[str]:
    """The params whose values are not all the same (seed last), less what says nothing
    (`identity.compared`: paths, digests, classes)."""
    from vaelab.identity import compared

    keys = sorted({k for r in runs for k in r.params})
    varied = [k for k in keys if len({r.params.get(k) for r in runs}) > 1 and compared(k)]
    return sorted(varied, key=lambda k: k == SEED)


def ranked(runs: Sequence[RunView], objective: str = OBJECTIVE) -> list[RunView]:
    """Finished runs by the objective (lowest first), then the others."""
    return sorted(runs, key=lambda r: (objective not in r.metrics, r.metrics.get(objective, math.inf)))


def metric_columns(runs: Sequence[RunView]) -> list[str]:
    return [m for m in FINAL_METRICS if any(m in r.metrics for r in runs)]


@dataclass
class SeedGroup:
    """The runs of one configuration that differ only in their seed."""

    values: dict[str, str]
    runs: list[RunView]

    def stats(self, metric: str) -> tuple[float, float, int] | None:
        """(mean, sample standard deviation, n) over the finished runs that have `metric`."""
        return mean_std([r.metrics[metric] for r in self.runs if r.status == "FINISHED" and metric in r.metrics])


def mean_std(values: Sequence[float]) -> tuple[float, float, int] | None:
    """(mean, sample standard deviation, n) of `values` (0 spread for one value); None for none."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def seed_groups(runs: Sequence[RunView]) -> list[SeedGroup]:
    """Runs grouped by every differing key but the seed, when the seed is one of them; else none."""
    keys = differing(runs)
    if SEED not in keys:
        return []
    groups: dict[tuple, SeedGroup] = {}
    for run in runs:
        values = {k: run.params.get(k, "") for k in keys if k != SEED}
        groups.setdefault(tuple(values.values()), SeedGroup(values, [])).runs.append(run)
    return sorted(groups.values(), key=lambda g: (g.stats(OBJECTIVE) or (math.inf,))[0])


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e6 else f"{value:.2f}"


def spread(stats: tuple[float, float, int] | None) -> str:
    return "-" if stats is None else f"{stats[0]:.2f} ± {stats[1]:.2f} (n={stats[2]})"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def compare_text(runs: Sequence[RunView]) -> str:
    """The terminal's table: one row per run, best first, the keys that differ, final metrics;
    then mean ± spread over seeds per configuration if the runs vary the seed."""
    keys, metrics = differing(runs), metric_columns(runs)
    rows = [[r.name, r.status, *(r.params.get(k, "") for k in keys), *(number(r.metrics.get(m)) for m in metrics),
             r.run_id] for r in ranked(runs)]
    text = text_table(["run", "status", *keys, *metrics, "run id"], rows)
    groups = seed_groups(runs)
    if groups:
        head = [k for k in keys if k != SEED]
        rows = [[*g.values.values(), *(spread(g.stats(m)) for m in metrics)] for g in groups]
        text += "\n\nmean ± standard deviation over seeds\n" + text_table([*head, *metrics], rows)
    return text


def report_html(runs: Sequence[RunView], title: str, subtitle: str = "") -> str:
    """One self-contained page: the table, the seeds' means, each metric's curves, every picture."""
    keys, metrics = differing(runs), metric_columns(runs)
    parts = [f"<h1>{esc(title)}</h1>", f"<p class=sub>{esc(subtitle)}</p>" if subtitle else "",
             "<h2>Runs, best first</h2>", runs_table(ranked(runs), keys, metrics)]
    groups = seed_groups(runs)
    if groups:
        parts += ["<h2>Mean ± standard deviation over seeds</h2>", seeds_table(groups, keys, metrics)]
    charts = [(key, curves_png(runs, key)) for key in CURVES if varies(runs, key)]
    if charts:
        parts.append("<h2>Curves</h2><div class=charts>" + "".join(
            f"<img alt='{esc(key)}' src='{data_uri(png)}'>" for key, png in charts) + "</div>")
    for key in PICTURES:
        shown = [r for r in ranked(runs) if key in r.pictures]
        if shown:
            parts.append(f"<h2>{esc(key)} (last epoch)</h2><div class='grid {key}'>" + "".join(
                f"<figure><img alt='{esc(key)} of {esc(r.name)}' src='{data_uri(r.pictures[key])}'>"
                f"<figcaption>{esc(r.name)}<br>{esc(OBJECTIVE)} {number(r.metrics.get(OBJECTIVE))}</figcaption></figure>"
                for r in shown) + "</div>")
    return PAGE.format(title=esc(title), body="\n".join(parts))


def runs_table(runs: list[RunView], keys: list[str], metrics: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in ["run", "status", *keys, *metrics, "run id"])
    rows = []
    for r in runs:
        name = f"<a href='{esc(r.link)}' target=_blank>{esc(r.name)}</a>" if r.link else esc(r.name)
        cells = [name, esc(r.status), *(esc(r.params.get(k, "")) for k in keys),
                 *(number(r.metrics.get(m)) for m in metrics), f"<code>{esc(r.run_id)}</code>"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        if r.error:
            rows.append(f"<tr class=error><td colspan={len(cells)}>{esc(r.error)}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def seeds_table(groups: list[SeedGroup], keys: list[str], metrics: list[str]) -> str:
    shown = [k for k in keys if k != SEED]
    head = "".join(f"<th>{esc(h)}</th>" for h in [*shown, *metrics])
    rows = ["<tr>" + "".join(f"<td>{esc(g.values[k])}</td>" for k in shown)
            + "".join(f"<td>{spread(g.stats(m))}</td>" for m in metrics) + "</tr>" for g in groups]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def varies(runs: Sequence[RunView], key: str) -> bool:
    """Whether `key` has more than one value across the runs' histories (a constant β is no chart)."""
    return len({v for r in runs for _, v in r.histories.get(key, [])}) > 1


def curves_png(runs: Sequence[RunView], key: str) -> bytes:
    """`key` against the epoch, one line per run (a run with one point is a marker, not a line)."""
    from vaelab.plots import new_figure

    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    for run in ranked(runs):
        points = run.histories.get(key)
        if points:
            steps, values = zip(*sorted(points))
            ax.plot(steps, values, marker="o" if len(points) == 1 else None, markersize=4, linewidth=1.2,
                    label=run.name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=key, title=key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(runs) > 8 else 1, loc="best")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    return out.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.sub {{ color: #666; margin-top: 0; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }} td {{ font-variant-numeric: tabular-nums; }}
tr.error td {{ color: #a00; font-size: 12px; white-space: pre-wrap; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: 12px; }}
.grid img {{ width: 100%; border: 1px solid #eee; }}
.reconstructions img, .samples img {{ image-rendering: pixelated; }}
.charts img {{ max-width: 640px; margin: 0 12px 12px 0; }}
figure {{ margin: 0; }} figcaption {{ font-size: 12px; color: #444; }}
</style></head>
<body>
{body}
</body></html>
"""
