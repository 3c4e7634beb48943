"""A network as a ``torch.export`` program (``.pt2``): PyTorch's successor to TorchScript for deployment.

TorchScript is deprecated as of PyTorch 2.9; MONAI's proposal for bundles (PR #8777) is ``.pt2`` programs
beside ONNX. A program holds the network's operations and weights as ATen graphs: it loads with
``torch.export.load(path).module()`` and runs without this package or the network's Python code.

:func:`export_program` exports with ``Dim.AUTO`` on the batch and spatial axes of each input, so an axis stays
dynamic where the network allows it (the U-Nets take any size their down-sampling allows) and is fixed
where it does not (MADGNet's adaptive pooling fixes the window), and a network whose shape constraints
torch.export cannot solve (ResUNet++) is exported for the example's shapes; the program is checked equal to the eager
network on the example before it is returned. :func:`save_program` records a digest of the weights in the
file, and :func:`load_program` returns ``None`` for a program of other weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from monai_ext.atomic import write_atomically
from monai_ext.errors import InputError, first_line

__all__ = ["export_program", "save_program", "load_program", "weights_digest", "dynamic_axes"]

_RECORD = "monai_ext.json"
logger = logging.getLogger("monai_ext.inferers")


def weights_digest(network: torch.nn.Module) -> str:
    """SHA-256 of the network's state (names and values)."""
    h = hashlib.sha256()
    for name, value in network.state_dict().items():
        data = value.detach().cpu()
        h.update(name.encode())
        h.update((data.float() if data.dtype == torch.bfloat16 else data).contiguous().numpy().tobytes())
    return h.hexdigest()


def export_program(
    network: torch.nn.Module, inputs: Sequence[torch.Tensor], rtol: float = 1e-4
) -> "torch.export.ExportedProgram":
    """``network`` (in eval mode) as a ``torch.export`` program, dynamic on every axis it allows.

    Raises:
        InputError: the network does not export, or its program's output differs from the eager output on
            ``inputs`` by more than ``rtol`` of the output's range.
    """
    from torch.export import Dim

    network.eval()
    inputs = tuple(x.detach() for x in inputs)
    dynamic = tuple({axis: Dim.AUTO for axis in range(x.dim()) if axis != 1 or x.dim() < 3} for x in inputs)
    try:
        program = torch.export.export(network, tuple(x.clone() for x in inputs), dynamic_shapes=dynamic)
    except Exception as e:  # torch.export raises many kinds for code it cannot trace, or shapes it cannot solve
        logger.info(
            "no dynamic shapes for %s (%s); exporting for these shapes", type(network).__name__, first_line(e)[:120]
        )
        try:  # fresh tensors: the first attempt marked the inputs' axes dynamic
            program = torch.export.export(network, tuple(x.clone() for x in inputs))
        except Exception as e:
            raise InputError(
                f"{type(network).__name__} does not export with torch.export ({first_line(e)[:200]})"
            ) from e
    with torch.no_grad():
        expected, found = network(*inputs), program.module()(*inputs)
    scale = float(expected.abs().max()) or 1.0
    if found.shape != expected.shape or float((found - expected).abs().max()) > rtol * scale:
        raise InputError(f"{type(network).__name__}: its torch.export program does not compute what the network does")
    return program


def dynamic_axes(program: "torch.export.ExportedProgram") -> List[int]:
    """The axes of the program's first input that take any size (symbolic in its graph)."""
    first = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == first)
    return [axis for axis, size in enumerate(node.meta["val"].shape) if isinstance(size, torch.SymInt)]


def save_program(program: "torch.export.ExportedProgram", path: Union[str, Path], digest: str) -> Path:
    """Write ``program`` to ``path`` (``.pt2``) under a temporary name, with the weights' ``digest`` inside."""
    record = json.dumps({"weights_sha256": digest, "torch": torch.__version__})
    return write_atomically(Path(path), lambda tmp: torch.export.save(program, tmp, extra_files={_RECORD: record}))


def load_program(path: Union[str, Path], digest: Optional[str] = None) -> Optional[torch.nn.Module]:
    """The program at ``path`` as a callable module, or ``None`` when ``digest`` is given and differs from the
    weights the program was saved with (or the file records none)."""
    extra = {_RECORD: ""}
    program = torch.export.load(str(path), extra_files=extra)
    if digest is not None:
        record = json.loads(extra[_RECORD] or "{}")
        if record.get("weights_sha256") != digest:
            return None
    return program.module()
