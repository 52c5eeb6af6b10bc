"""`vaelab compare RUN_OR_SWEEP ...`: any runs, or sweeps (by their parent's id), of any experiments
of one store, as one table in the terminal showing only the keys that differ, best first, with
mean ± spread over seeds when they vary the seed; `--html PATH` writes the report of the same runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.errors import VaelabError


def main(argv: list[str] | None = None) -> int:
    from vaelab.ui import default_store

    parser = argparse.ArgumentParser(prog="vaelab compare", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("ids", nargs="+", metavar="RUN_OR_SWEEP", help="run ids; a sweep's parent stands for its jobs")
    parser.add_argument("--store", default=None, help=f"a tracking URI; default {default_store()}")
    parser.add_argument("--html", type=Path, default=None, metavar="PATH", help="also write the report page here")
    parser.add_argument("--credentials", default=None, help="a server's login (MLflow's credentials format)")
    args = parser.parse_args(argv)
    try:
        print(compare(args.ids, args.store or default_store(), args.html, args.credentials))
    except VaelabError as err:
        print(f"vaelab compare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def compare(ids: list[str], uri: str, html: Path | None = None, credentials: str | None = None) -> str:
    """The table of the runs `ids` name in the store `uri`; with `html`, the report written there."""
    from vaelab.report import compare_text, report_html
    from vaelab.tracking.store import reach, use_credentials
    from vaelab.tracking.readback import expand, run_views

    if credentials:
        use_credentials(credentials)
    client = reach(uri)
    views = run_views(client, expand(client, ids), uri, pictures=html is not None)
    text = compare_text(views)
    if html is not None:
        html.write_text(report_html(views, f"{len(views)} runs compared", f"from {uri}"), encoding="utf-8")
        text += f"\n\nreport: {html}"
    return text


if __name__ == "__main__":
    sys.exit(main())
