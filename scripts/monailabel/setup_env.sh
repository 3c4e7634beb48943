#!/usr/bin/env bash
# Build the separate environment MONAI Label needs (default .venv-monailabel at the repository root):
# torch 2.14.1 + torchvision 0.29.1 (a matching pair; about 5.5 GB), MONAI Label 0.8.5 with its pins,
# and this repository's package without its own pins (our .venv keeps requirements.txt's versions).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$root/.venv-monailabel}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "setuptools==80.10.2" "wheel==0.45.1"
"$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
# sam2 (a dependency of monailabel) builds against the installed torch: no build isolation
"$venv/bin/pip" install -q --no-build-isolation torch==2.14.1 torchvision==0.29.1 -r "$root/scripts/monailabel/requirements.txt"
"$venv/bin/pip" install -q --no-deps -e "$root"
"$venv/bin/python" -c "import monailabel, monai, torch, torchvision, monai_ext; print('monailabel', monailabel.__version__, 'monai', monai.__version__, 'torch', torch.__version__)"
