"""DICOMweb in and out (a PACS such as Orthanc, DCM4CHEE or a cloud DICOM store), with ``dicomweb-client``.

An input URL names a study or one series under the server's DICOMweb root::

    http[s]://[user:password@]HOST[:PORT]/ROOT/studies/STUDY_UID[/series/SERIES_UID]

e.g. ``http://localhost:8042/dicom-web/studies/1.2.3/series/1.2.3.4`` for Orthanc. :func:`download` finds the
study's series (QIDO-RS) and retrieves the chosen ones (WADO-RS) into a local folder, one subfolder per
series; :func:`store` sends a written SEG or RTSTRUCT back (STOW-RS). Server and network errors are one
:class:`InputError` line naming the URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from monai_ext.errors import InputError, first_line

from .series import choose_series, series_summary

__all__ = ["is_url", "parse_url", "base_url", "download", "store"]

_PATH = re.compile(r"^(?P<root>.*?)/studies/(?P<study>[0-9.]+)(?:/series/(?P<series>[0-9.]+))?/?$")


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def parse_url(url: str) -> Tuple[str, str, Optional[str], Optional[Tuple[str, str]]]:
    """``(DICOMweb root URL, study UID, series UID or None, (user, password) or None)``.

    Raises:
        InputError: a URL that does not name a study.
    """
    parts = urlsplit(url)
    match = _PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.hostname or match is None:
        raise InputError(
            f"{shown(url)}: not a DICOMweb study or series URL (http[s]://HOST[:PORT]/ROOT/studies/UID[/series/UID])"
        )
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    root = urlunsplit((parts.scheme, netloc, match["root"], "", ""))
    credentials = (parts.username or "", parts.password or "") if parts.username else None
    return root, match["study"], match["series"], credentials


def shown(url: str) -> str:
    """``url`` as messages show it: a password replaced by ``***``."""
    return re.sub(r"^(\w+://[^/:@]*):[^/@]*@", r"\1:***@", url)


def base_url(url: str) -> str:
    return parse_url(url)[0]


def _client(root: str, credentials: Optional[Tuple[str, str]]):
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session, create_session_from_user_pass

    session = create_session_from_user_pass(*credentials) if credentials else create_session()
    client = DICOMwebClient(url=root, session=session)
    # a busy server (429, 503, 504) gets three tries, 1 s and 2 s apart; not the library's 5 tries over 30 s,
    # which leave a user without a word when the server is simply down
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)
    return client


def _call(url: str, what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # requests' HTTPError, ConnectionError, ... and dicomweb-client's ValueErrors
        raise InputError(f"{shown(url)}: {what} failed ({type(e).__name__}: {first_line(e)})") from e


def _value(item: dict, tag: str, default: str = "") -> str:
    values = item.get(tag, {}).get("Value") or [default]
    return str(values[0])


def download(url: str, folder: Path, series: Optional[str] = None, each_series: bool = True) -> Path:
    """Retrieve the series a URL names (or ``series`` of its study, or every series of it) into
    ``folder/<SeriesInstanceUID>/``; returns ``folder``, ready for :func:`~monai_ext.data.volume_io.find_cases`.

    Raises:
        InputError: a bad URL, a server or network error, no such study or series, or several series when
            neither ``series`` nor ``each_series`` chooses.
    """
    root, study, url_series, credentials = parse_url(url)
    client = _client(root, credentials)
    if url_series and series and url_series != series:
        raise InputError(f"{shown(url)}: names series {url_series}, and series= asks for {series}")
    wanted = url_series or series
    found = _call(url, "QIDO-RS series search", client.search_for_series, study_instance_uid=study)

    def number(item: dict) -> int:
        value = _value(item, "00200011", "")
        return int(value) if value.lstrip("-").isdigit() else 1 << 30

    uids = {
        _value(item, "0020000E"): item for item in sorted(found or [], key=lambda i: (number(i), _value(i, "0020000E")))
    }
    if not uids:
        raise InputError(f"{shown(url)}: no such study on the server (QIDO-RS found no series)")
    listing = {
        uid: series_summary(uid, _value(i, "00200011", "") or None, _value(i, "00080060"), _value(i, "0008103E"))
        for uid, i in uids.items()
    }
    chosen = choose_series(shown(url), listing, wanted, each_series, other_way=" (or a series URL)")
    folder.mkdir(parents=True, exist_ok=True)
    for uid in chosen:
        target = folder / uid
        target.mkdir(exist_ok=True)
        instances = _call(
            url,
            f"WADO-RS retrieval of series {uid}",
            client.retrieve_series,
            study_instance_uid=study,
            series_instance_uid=uid,
        )
        for ds in instances:
            ds.save_as(target / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return folder


def store(url: str, path: Path) -> None:
    """Store a DICOM file (our SEG or RTSTRUCT) on the DICOMweb server of ``url`` (STOW-RS).

    Raises:
        InputError: a server or network error, or a response that lists the instance as failed.
    """
    import pydicom

    root, _, _, credentials = parse_url(url)
    client = _client(root, credentials)
    ds = pydicom.dcmread(path)
    response = _call(url, f"STOW-RS of {Path(path).name}", client.store_instances, datasets=[ds])
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        raise InputError(f"{shown(url)}: the server refused {Path(path).name} (FailedSOPSequence: {failed})")
