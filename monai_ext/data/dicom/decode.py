"""A series' voxels: every slice decoded in parallel (pydicom with the pylibjpeg, openjpeg, JPEG-LS and RLE
plugins), each slice's rescale applied, on the grid :mod:`.geometry` fits, as a channel-first
``MetaTensor`` with a RAS affine (:func:`read_series`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from monai_ext.errors import InputError, first_line

__all__ = ["read_series"]

from .geometry import Geometry, series_geometry
from .series import Series, Slice, _read_header, _workers

logger = logging.getLogger("monai_ext.dicom")


def _native(header) -> Optional[np.ndarray]:
    """The pixels of an uncompressed single-sample object straight from the file, ``(frames, rows, columns)``;
    None where pydicom's general decoder is needed (compressed, colour, signed with unused high bits)."""
    syntax = header.file_meta.get("TransferSyntaxUID", None)
    bits, stored = int(header.get("BitsAllocated", 0) or 0), int(header.get("BitsStored", 0) or 0)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    if (
        syntax is None
        or syntax.is_compressed
        or not syntax.is_transfer_syntax
        or int(header.get("SamplesPerPixel", 1) or 1) != 1
        or bits not in (8, 16, 32)
        or (signed and stored != bits)
        or "PixelData" not in header
        or syntax == "1.2.840.10008.1.2.1.99"
        or str(header.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    ):
        return None
    element = header.get_item("PixelData", keep_deferred=True)
    frames, rows, columns = int(header.get("NumberOfFrames", 1) or 1), int(header.Rows), int(header.Columns)
    dtype = np.dtype(f"{'<' if syntax.is_little_endian else '>'}{'i' if signed else 'u'}{bits // 8}")
    count = frames * rows * columns
    if isinstance(element.value, (bytes, bytearray)):  # small enough to have been read with the header
        raw = bytes(element.value[: count * dtype.itemsize])
    elif getattr(element, "is_raw", False) and element.value is None:  # deferred: read it from its offset
        with open(header.filename, "rb") as f:
            f.seek(element.value_tell)
            raw = f.read(count * dtype.itemsize)
    else:
        return None
    if len(raw) < count * dtype.itemsize:
        raise _Short(
            f"truncated: {len(raw)} bytes of pixel data where {rows}x{columns}x{frames} pixels need {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(frames, rows, columns)


class _Short(Exception):
    pass


def _decode(header) -> Tuple[np.ndarray, Optional[str]]:
    """All frames of one file as ``(frames, rows, columns[, samples])``; or the problem, in words.

    Uncompressed pixels are read from the file at the offset the header scan recorded; everything else is
    decoded by pydicom (and its JPEG, JPEG-LS, JPEG 2000 and RLE plugins)."""
    import pydicom

    if "PixelData" not in header and "FloatPixelData" not in header and "DoubleFloatPixelData" not in header:
        return np.zeros(0), "no pixel data"
    try:
        array = _native(header)
    except _Short as e:
        return np.zeros(0), str(e)
    except OSError as e:
        return np.zeros(0), f"unreadable ({e})"
    frames, samples = int(header.get("NumberOfFrames", 1) or 1), int(header.get("SamplesPerPixel", 1) or 1)
    if array is None:
        try:
            ds = pydicom.dcmread(header.filename, force=True)
            array = ds.pixel_array
        except Exception as e:  # decoders raise many kinds
            syntax = getattr(header.file_meta.get("TransferSyntaxUID", None), "name", "unknown transfer syntax")
            return np.zeros(0), f"pixel data does not decode ({syntax}: {first_line(e)})"
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            array, samples = apply_color_lut(array, ds), 3
        if frames == 1:
            array = array[None]
    expected = (frames, int(header.Rows), int(header.Columns)) + ((samples,) if samples > 1 else ())
    if array.shape != expected:
        return np.zeros(0), f"decoded pixel data has shape {list(array.shape)}, the header says {list(expected)}"
    return array, None


def _decode_compressed(headers: List, workers: Optional[int]) -> Dict[str, Tuple[np.ndarray, Optional[str]]]:
    """:func:`_decode` the compressed files among ``headers`` in worker processes (the decoders hold the GIL),
    by file name; the rest are read where they are placed (:func:`read_series`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    compressed = [h.filename for h in headers if _is_compressed(h)]
    n = _workers(workers, len(compressed))
    if n < 2 or len(compressed) < 4:
        return {}
    # fork: the workers need only pydicom and numpy, already imported (as PyTorch's DataLoader workers do)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
        return dict(zip(compressed, pool.map(_decode_file, compressed, chunksize=max(1, len(compressed) // (4 * n)))))


def _decode_file(path: str) -> Tuple[np.ndarray, Optional[str]]:
    return _decode(_read_header(Path(path)))


def _is_compressed(header) -> bool:
    syntax = header.file_meta.get("TransferSyntaxUID", None)
    return syntax is not None and syntax.is_transfer_syntax and syntax.is_compressed


def _voxel_type(series: Series, geometry: Geometry, depth: int) -> np.dtype:
    """The stored integers' type where every slice's rescale is ``value + integral intercept`` and that type
    holds the result (as ITK returns CT in int16), else float32 (rescale slopes, float pixels, interpolated gaps)."""
    first = series.first
    bits, stored = int(first.get("BitsAllocated", 0) or 0), int(first.get("BitsStored", 0) or 0)
    intercepts = {s.rescale[1] for s in geometry.slices}
    if (
        len(geometry.index) != depth
        or bits not in (8, 16)
        or not 0 < stored <= bits
        or "PixelData" not in first
        or str(first.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
        or any(s.rescale[0] != 1 for s in geometry.slices)
        or any(float(i) != int(i) for i in intercepts)
        or any(
            int(h.get("BitsStored", 0) or 0) != stored
            or int(h.get("PixelRepresentation", 0) or 0) != int(first.get("PixelRepresentation", 0) or 0)
            for h in series.headers
        )
    ):
        return np.dtype(np.float32)
    signed = int(first.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    low, high = low + int(min(intercepts)), high + int(max(intercepts))
    for candidate in (np.uint8, np.int16, np.int32):  # types every torch operation takes
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float32)


def read_series(
    series: Series, tolerance: Optional[float] = None, allow_gaps: bool = False, workers: Optional[int] = None
):
    """Decode a series onto its grid: a ``MetaTensor`` ``(C, columns, rows, slices)`` with a RAS affine
    (``(C, columns, rows)`` for a projection image without a patient plane, such as a radiograph).

    Each slice's own RescaleSlope/RescaleIntercept is applied. The voxels keep the stored integer type where
    that holds the rescaled values (CT in int16, as ITK reads it), else they are float32 (``_voxel_type``).
    ``C`` is 1, or 3 for colour (RGB, YBR and
    palette colour images arrive as RGB).
    Returns ``(image, geometry)``; see :func:`series_geometry` for the checks and the arguments.

    Raises:
        InputError: a geometry problem, or a file whose pixel data is missing, short or does not decode.
    """
    import torch
    from monai.data import MetaTensor
    from monai.utils import SpaceKeys

    geometry = series_geometry(series, tolerance, allow_gaps)
    for text in geometry.warnings:
        logger.warning("%s", text)
    by_path = {h.filename: h for h in series.headers}
    planes_of: Dict[str, List[Tuple[Slice, int]]] = {}
    for s, k in zip(geometry.slices, geometry.index):
        planes_of.setdefault(str(s.path), []).append((s, k))
    first = series.first
    colour = (
        int(first.get("SamplesPerPixel", 1) or 1) == 3
        or str(first.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    )
    channels = 3 if colour else 1
    columns, rows, depth = (*geometry.shape, 1)[:3]
    dtype = _voxel_type(series, geometry, depth)
    planes = np.empty((depth, rows, columns, channels), dtype=dtype)  # filled plane by plane, contiguously
    decoded = _decode_compressed(list(by_path.values()), workers)

    def place(path: str) -> Optional[str]:
        """Read (or take the decoded) pixels of one file and put each of its planes on the grid; or the problem."""
        frames, problem = decoded.pop(path) if path in decoded else _decode(by_path[path])
        if problem is None and (frames.shape[3] if frames.ndim == 4 else 1) != channels:
            samples = frames.shape[3] if frames.ndim == 4 else 1
            problem = f"{samples} sample(s) per pixel where {series.first.filename} has {channels}"
        if problem:
            return problem
        for s, k in planes_of[path]:
            plane = planes[k]
            pixels = frames[s.frame or 0].reshape(rows, columns, channels)
            slope, intercept = s.rescale
            if dtype == np.float32:
                plane[...] = pixels
                if slope != 1:
                    plane *= np.float32(slope)
                if intercept != 0:
                    plane += np.float32(intercept)
            else:  # stored values plus an integral intercept, in a type _voxel_type checked holds them
                np.add(pixels, np.int32(intercept), out=plane, casting="unsafe")  # in int32, then stored
        return None

    with ThreadPoolExecutor(
        _workers(workers, len(planes_of))
    ) as pool:  # file reads and numpy's conversions release the GIL
        problems = dict(zip(planes_of, pool.map(place, planes_of)))
    for name, problem in sorted(problems.items()):
        if problem:
            raise InputError(f"{name}: {problem}")
    if len(geometry.index) != depth:  # allow_gaps: linear interpolation along the normal
        known = np.array(geometry.index)
        for k in sorted(set(range(depth)) - set(geometry.index)):
            after = int(np.searchsorted(known, k))
            lo, hi = known[after - 1], known[after]
            w = (k - lo) / (hi - lo)
            planes[k] = (1 - w) * planes[lo] + w * planes[hi]
    volume = planes.transpose(3, 2, 1, 0)  # (C, columns, rows, slices), a view
    if geometry.planar:
        volume = volume[..., 0]
    affine = torch.as_tensor(geometry.affine, dtype=torch.float64)
    meta = {
        "filename_or_obj": str(series.source),
        "original_affine": geometry.affine.copy(),
        "spatial_shape": np.array(geometry.shape),
        "space": SpaceKeys.RAS,
        "original_channel_dim": 0 if channels > 1 else float("nan"),
        "spacing": np.array(
            [geometry.slices[0].spacing[1], geometry.slices[0].spacing[0], geometry.pitch][: len(geometry.shape)]
        ),
        "series_instance_uid": series.uid,
    }
    return MetaTensor(torch.from_numpy(volume), affine=affine, meta=meta), geometry
