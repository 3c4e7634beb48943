"""Start a private Orthanc with its DICOMweb plugin on 127.0.0.1 (Debian's ``orthanc`` and ``orthanc-dicomweb``),
for the PACS tests and the MONAI Label DICOMweb check: its own storage folder, free ports, no authentication,
loopback only. ``with orthanc(folder) as root:`` gives the DICOMweb root URL (``http://127.0.0.1:PORT/dicom-web``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> Optional[str]:
    """Orthanc's executable, or None where it or its DICOMweb plugin is not installed."""
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    return found if found and PLUGIN.exists() else None


@contextlib.contextmanager
def orthanc(folder: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run Orthanc with its storage in ``folder`` until the block ends; yields the DICOMweb root URL.

    Raises:
        RuntimeError: Orthanc is not installed, exits, or does not answer within ``timeout`` seconds.
    """
    executable = binary()
    if executable is None:
        raise RuntimeError(
            f"Orthanc with its DICOMweb plugin ({PLUGIN}) is not installed: apt-get install orthanc orthanc-dicomweb"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "monai_ext",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=4))
    root = f"http://127.0.0.1:{port}/dicom-web"
    with open(folder / "orthanc.log", "w") as log:
        process = subprocess.Popen(
            [executable, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}"
                    )
                with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                    with urllib.request.urlopen(f"{root}/studies", timeout=2) as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not answer on {root} within {timeout:g} s")
                time.sleep(0.1)
            yield root
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
