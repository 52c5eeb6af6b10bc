#!/usr/bin/env bash
# The README's UI pictures (docs/images/ui_image_grid.png, ui_sweep_parent.png, ui_model_metrics_first_look.png,
# ui_runs_first_look.png, sweep_report.png), taken by the browser tests from real runs: a 2-job sweep and a single run on 6,000 real MNIST
# images (VAELAB_UI_MNIST: a data.root holding MNIST/raw, by default vaelab's cache).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export VAELAB_UI_MNIST=${VAELAB_UI_MNIST:-${XDG_CACHE_HOME:-$HOME/.cache}/vaelab}
export VAELAB_SCREENSHOTS=${VAELAB_SCREENSHOTS:-docs/images}
"$PY" -m pytest -m ui tests/test_ui.py -q "$@"
ls -l "$VAELAB_SCREENSHOTS"/ui_*.png "$VAELAB_SCREENSHOTS"/sweep_report.png
