"""The command line starts at once: parsing it (``--help``, a bad flag) imports neither torch nor MONAI."""

import subprocess
import sys

from monai_ext.__main__ import PUBLIC_DATASETS
from monai_ext.data.public import DATASETS


def _modules_after(*args: str) -> set:
    code = (
        "import sys; from monai_ext.__main__ import main\n"
        "try:\n    main(list(sys.argv[1:]))\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    return set(proc.stdout.splitlines()[-1].split())  # the last line: the help text comes before it


def test_help_and_a_bad_flag_import_neither_torch_nor_monai():
    for args in (["--help"], ["segment", "--help"], ["prepare", "nope"], ["convert", "--help"]):
        loaded = _modules_after(*args)
        assert "argparse" in loaded and not {"torch", "monai", "numpy"} & loaded, args


def test_the_command_line_names_every_public_data_set():
    assert sorted(PUBLIC_DATASETS) == sorted(DATASETS)
