"""A bundle's network run by a CPU inference engine: OpenVINO (fp32, or int8 after NNCF's post-training
quantisation) or ONNX Runtime, or by PyTorch itself (optionally channels-last or bfloat16).

:class:`CompiledNetwork` stands where a bundle's ``network`` stands (``inference.json``: ``"network":
"$monai_ext.inferers.CompiledNetwork(@network_def.to(@device), @backend, ...)"``), so
``python -m monai.bundle run``, MONAI Label and ``python -m monai_ext segment`` all run the same engine.
Its weights are the wrapped network's, under the network's own names: a bundle's checkpoint loads into it
as into the network itself. On the first call with a new window shape the network is exported to ONNX
for ONNX Runtime with MONAI's ``convert_to_onnx`` (TorchScript tracing, else ``torch.export``), for OpenVINO
by its PyTorch frontend, with static shapes (the batch of that first call, into which later batches are cut
and padded), and compiled; the exported and
compiled models are cached in ``cache_dir`` under a key of the weights' SHA-256, the input shapes, the
backend and precision and the library versions, so a second run loads them instead (a changed weight, window
or library makes a new key). Files are written under a temporary name and renamed.

int8 (OpenVINO): NNCF's post-training quantisation of the fp32 model, calibrated on windows of a few cases
(``calibration``, e.g. a bundle's validation cases after its preprocessing), then checked on those windows:
where the int8 network's arg-max labels differ from fp32's on more than 1% of the voxels (``min_agreement``)
the network does not quantise and int8 is refused, naming the share (a trained ResUNet++ fell from Dice
0.76 to 0.24 in int8 on our synthetic task). Networks with more than one
input (MedSegDiff's denoiser and its timestep) are refused for int8: the sampler feeds the quantised
network's output back into it for every step.

bfloat16 (PyTorch) on a CPU without native bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``) is
refused: PyTorch emulates it there, 47 times slower than fp32 on an AVX2 EPYC in our benchmark.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from monai_ext.atomic import write_atomically
from monai_ext.errors import InputError, MissingPackageError, first_line
from monai_ext.threads import available_threads

__all__ = ["BACKENDS", "PRECISIONS", "CompiledNetwork", "calibration_windows", "cpu_has_native_bf16"]

logger = logging.getLogger("monai_ext.backends")

BACKENDS = ("torch", "pt2", "openvino", "onnxruntime")
PRECISIONS = {"torch": ("fp32", "bf16"), "pt2": ("fp32",), "openvino": ("fp32", "int8"), "onnxruntime": ("fp32",)}
SHIPPED_PROGRAM = "model.pt2"  # beside the weights: an export's torch.export program


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``; Linux flags, else ``False``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64"  # Apple silicon
    return " avx512_bf16" in flags or " amx_bf16" in flags


class CompiledNetwork(torch.nn.Module):
    """``network`` run by ``backend`` at inference (see the module docstring).

    Args:
        network: the bundle's network (``network_def``), in eval mode at inference.
        backend: ``"torch"`` (eager), ``"pt2"`` (the ``torch.export`` program: an export's ``model.pt2``
            beside the weights when it holds these weights, else exported on the first call and cached),
            ``"openvino"`` or ``"onnxruntime"`` (CPU).
        precision: ``"fp32"``; ``"bf16"`` (torch: autocast) or ``"int8"`` (openvino: NNCF quantisation).
        channels_last: torch backend: run in the channels-last memory format.
        cache_dir: where exported and compiled models are kept (``None``: compiled in memory every run).
        calibration: int8: a callable returning the calibration windows, each ``(1, C, *window)``.
        num_threads: the backend's threads (default :func:`monai_ext.threads.available_threads`).
        min_agreement: int8: the share of the calibration windows' arg-max labels the quantised network must
            give as the fp32 network does; below it the network does not quantise, and int8 is refused.
        batch_size: compiled backends: the batch to compile for (a bundle's ``sw_batch_size``), whatever the
            first call's; smaller calls are padded to it, larger ones cut into it. Default: the first call's.

    Raises:
        InputError: an unknown backend or precision, bf16 on a CPU without native bfloat16, or int8 for a
            network that does not quantise (one line naming it).
        MissingPackageError: a backend that is not installed.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        backend: str = "torch",
        precision: str = "fp32",
        channels_last: bool = False,
        cache_dir: Union[str, Path, None] = None,
        calibration: Optional[Callable[[], Sequence[torch.Tensor]]] = None,
        num_threads: Optional[int] = None,
        min_agreement: float = 0.99,
        batch_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise InputError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS[backend]:
            raise InputError(f"precision {precision!r}: the {backend} backend runs {' or '.join(PRECISIONS[backend])}")
        if backend != "torch" and channels_last:
            raise InputError(
                f"channels_last: a torch backend option; the {backend} backend chooses its own memory layout"
            )
        if backend in ("openvino", "onnxruntime"):
            _require(backend, precision)
        self.network = network
        self.backend, self.precision, self.channels_last = backend, precision, bool(channels_last)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.calibration = calibration
        self.num_threads = num_threads or available_threads()
        self.min_agreement = min_agreement
        self.batch_size = batch_size
        self._layout: Optional[torch.memory_format] = None
        self._runners: Dict[Tuple, Any] = {}  # (compiled batch, runner), or the error that refused it

    # -------------------------------------------------------------------------- the network's weights

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._runners.clear()  # compiled from other weights
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            # the network's settings (e.g. ``mask_channels``), not its methods: a sampler that calls
            # ``encode_image`` would bypass the backend, so it calls this module instead
            value = getattr(self._modules["network"], name)
            if callable(value):
                raise
            return value

    # ---------------------------------------------------------------------------------------- running

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.backend == "torch":
            return self._eager(*inputs)
        if self.backend != "pt2" and any(x.device.type != "cpu" for x in inputs):
            raise InputError(f"backend {self.backend}: runs on the CPU; use --device cpu (or --backend torch on a GPU)")
        # compiled for the first batch size seen with this window (static shapes export every network, MADGNet's
        # adaptive pooling included); other batches are cut into and padded to that size
        signature = tuple((tuple(x.shape[1:]), str(x.dtype)) for x in inputs)
        if signature not in self._runners:
            size = self.batch_size or inputs[0].shape[0]
            example = [torch.cat([x] * -(-size // x.shape[0]))[:size] for x in inputs]
            try:
                self._runners[signature] = (size, self._compile(example))
            except InputError as e:  # refused (e.g. int8 that does not quantise): once, not again for every case
                self._runners[signature] = e
        if isinstance(self._runners[signature], InputError):
            raise self._runners[signature]
        size, run = self._runners[signature]
        outputs = []
        for start in range(0, inputs[0].shape[0], size):
            part = [x[start : start + size] for x in inputs]
            short = size - part[0].shape[0]
            if short:
                part = [torch.cat([x, x[-1:].expand(short, *x.shape[1:])]) for x in part]
            outputs.append(run(part)[: size - short])
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def _eager(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16" and inputs[0].device.type == "cpu" and not cpu_has_native_bf16():
            raise InputError(
                "precision bf16: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag), where PyTorch "
                "emulates it, many times slower than fp32; use fp32"
            )
        if self.channels_last and inputs[0].dim() in (4, 5):
            fmt = torch.channels_last if inputs[0].dim() == 4 else torch.channels_last_3d
            if self._layout is not fmt:  # the weights once, not at every call
                self.network.to(memory_format=fmt)
                self._layout = fmt
            inputs = (inputs[0].contiguous(memory_format=fmt),) + tuple(inputs[1:])
        with torch.autocast(inputs[0].device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.network(*inputs)
        return out.float() if self.precision == "bf16" else out

    # -------------------------------------------------------------------------------------- compiling

    def _key(self, inputs: Sequence[torch.Tensor]) -> str:
        import importlib.metadata as metadata

        from monai_ext.inferers.exported_program import weights_digest

        h = hashlib.sha256(weights_digest(self.network).encode())
        h.update(repr([(tuple(x.shape), str(x.dtype)) for x in inputs]).encode())
        engine = "torch" if self.backend == "pt2" else self.backend
        h.update(f"{torch.__version__}|{self.backend}|{metadata.version(engine)}|{inputs[0].device.type}".encode())
        return h.hexdigest()[:20]

    def _cached(self, name: str) -> Optional[Path]:
        return None if self.cache_dir is None else self.cache_dir / name

    def _onnx(self, inputs: Sequence[torch.Tensor], key: str) -> Path:
        """The network as ONNX (MONAI's ``convert_to_onnx``), batch axis dynamic; cached."""
        import tempfile

        from monai.networks.utils import convert_to_onnx

        path = self._cached(f"network-{key}.onnx") or Path(tempfile.mkdtemp(prefix="monai_ext_onnx_")) / "network.onnx"
        if path.is_file():
            return path
        names = [f"input{i}" for i in range(len(inputs))]
        example = [x.detach().cpu() for x in inputs]
        self.network.eval()

        def export(tmp: Path) -> None:
            import contextlib
            import io

            kwargs = {
                "input_names": names,
                "output_names": ["pred"],
                "filename": str(tmp),
                "verify": False,
                "opset_version": 18,
            }
            try:  # TorchScript tracing: quick and quiet
                convert_to_onnx(self.network, example, dynamo=False, **kwargs)
                return
            except Exception as e:  # e.g. adaptive pooling to a size that does not divide the input (MADGNet)
                logger.info("tracing did not export (%s); exporting with torch.export", first_line(e)[:120])
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its steps
                    # one file: the weights inside it, not in a ``.data`` file named after the temporary one
                    convert_to_onnx(self.network, example, dynamo=True, verbose=False, external_data=False, **kwargs)
            except Exception as e:
                raise InputError(
                    f"backend onnxruntime: {type(self.network).__name__} does not export to ONNX ({first_line(e)[:160]}); "
                    "use the openvino backend, which converts it from PyTorch"
                ) from e

        logger.info("exporting the network to ONNX for %s (window %s)", self.backend, list(inputs[0].shape[2:]))
        return write_atomically(path, export)

    def _compile(self, inputs: Sequence[torch.Tensor]) -> Callable:
        key = self._key(inputs)
        try:
            if self.backend == "onnxruntime":
                onnx = self._onnx(inputs, key)
                try:
                    return self._onnxruntime(onnx)
                finally:
                    if self.cache_dir is None:  # the session holds the model; the temporary export goes
                        shutil.rmtree(onnx.parent, ignore_errors=True)
            if self.backend == "pt2":
                return self._program(key, inputs)
            return self._openvino(key, inputs)
        except OSError as e:  # a read-only bundle, a full disk: compile in memory, every run
            if self.cache_dir is None:
                raise
            logger.warning(
                "%s: the compiled network is not cached (%s); it is compiled again next run",
                getattr(e, "filename", None) or self.cache_dir,
                e.strerror or e,
            )
            self.cache_dir = None
            return self._compile(inputs)

    def _program(self, key: str, inputs: Sequence[torch.Tensor]) -> Callable:
        from monai_ext.inferers.exported_program import export_program, load_program, save_program, weights_digest

        digest = weights_digest(self.network)
        shipped = None if self.cache_dir is None else self.cache_dir.parent / SHIPPED_PROGRAM
        if shipped is not None and shipped.is_file() and all(x.device.type == "cpu" for x in inputs):
            module = load_program(shipped, digest)
            if module is not None:
                try:
                    with torch.no_grad():
                        module(*inputs)  # a program fixed to another window refuses this one
                    logger.info("running %s (torch.export program of these weights)", shipped)
                    return lambda xs: module(*xs)
                except Exception as e:
                    logger.info("%s does not take this window (%s); exporting for it", shipped, first_line(e)[:120])
        path = self._cached(f"program-{key}.pt2")
        module = load_program(path, digest) if path is not None and path.is_file() else None
        if module is None:
            logger.info("exporting the network with torch.export (window %s)", list(inputs[0].shape[2:]))
            program = export_program(self.network, inputs)
            if path is not None:
                save_program(program, path, digest)
            module = program.module()
        return lambda xs: module(*xs)

    def _onnxruntime(self, onnx: Path) -> Callable:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
            feed = {n: x.detach().contiguous().numpy() for n, x in zip(names, inputs)}
            return torch.from_numpy(session.run(None, feed)[0])

        return run

    def _openvino(self, key: str, inputs: Sequence[torch.Tensor]) -> Callable:
        import openvino as ov

        core = ov.Core()
        path = self._cached(f"openvino-{self.precision}-{key}.xml")
        if path is not None and path.is_file() and path.with_suffix(".bin").is_file():
            model = core.read_model(str(path))
        else:
            windows = self._calibration_windows(inputs) if self.precision == "int8" else []
            logger.info("converting the network to OpenVINO (window %s)", list(inputs[0].shape[2:]))
            self.network.eval()
            with (
                torch.no_grad()
            ):  # OpenVINO's PyTorch frontend: every bundle's operations, 3D adaptive pooling included
                model = ov.convert_model(
                    self.network,
                    example_input=tuple(x.detach().cpu() for x in inputs),
                    input=[ov.PartialShape(list(x.shape)) for x in inputs],
                )
            if self.precision == "int8":
                model = self._quantize(model, inputs, windows)
            if path is not None:
                _save_openvino(model, path)
        compiled = core.compile_model(
            model, "CPU", {"INFERENCE_NUM_THREADS": self.num_threads, "INFERENCE_PRECISION_HINT": "f32"}
        )
        request = compiled.create_infer_request()
        output = compiled.output(0)

        def run(inputs: Sequence[torch.Tensor]) -> torch.Tensor:
            result = request.infer([x.detach().contiguous().numpy() for x in inputs])
            return torch.from_numpy(np.array(result[output]))

        return run

    def _calibration_windows(self, inputs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The windows int8 is calibrated on, checked before anything is converted."""
        if len(inputs) != 1:
            raise InputError(
                f"precision int8: {type(self.network).__name__} takes {len(inputs)} inputs (a diffusion denoiser and its "
                "timestep); its sampler feeds each output back in, so it is not quantised: use fp32"
            )
        if self.calibration is None:
            raise InputError(
                "precision int8: no calibration cases (the bundle's validation cases after its preprocessing); "
                "prepare the data set where the bundle was trained, or use fp32"
            )
        windows = [w.detach().cpu().float() for w in self.calibration()]
        if not windows:
            raise InputError(
                "precision int8: the calibration cases gave no windows; check the bundle's datalist, or use fp32"
            )
        return windows

    def _quantize(self, model, inputs: Sequence[torch.Tensor], windows: List[torch.Tensor]):
        import nncf

        size = inputs[0].shape[0]  # the compiled batch: windows go in groups of it
        stacked = torch.cat(windows + windows[: (-len(windows)) % size])
        batches = [stacked[i : i + size].numpy() for i in range(0, len(stacked), size)]
        logger.info("quantising to int8 with NNCF on %d calibration windows", len(windows))
        quantised = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
        # does it still segment as fp32 does? (a network can lose its accuracy in int8, e.g. ResUNet++)
        import openvino as ov

        compiled = ov.Core().compile_model(
            quantised, "CPU", {"INFERENCE_NUM_THREADS": self.num_threads, "INFERENCE_PRECISION_HINT": "f32"}
        )
        same = total = 0
        with torch.no_grad():
            for batch in batches:
                expected = self.network(torch.from_numpy(batch)).argmax(1)
                got = torch.from_numpy(np.array(compiled([batch])[compiled.output(0)])).argmax(1)
                same, total = same + int((got == expected).sum()), total + expected.numel()
        agreement = same / max(total, 1)
        logger.info("int8 gives fp32's labels on %.4f of the calibration windows' voxels", agreement)
        if agreement < self.min_agreement:
            raise InputError(
                f"precision int8: {type(self.network).__name__} does not quantise: the int8 network gives the fp32 labels on "
                f"{agreement:.1%} of the calibration windows' voxels (at least {self.min_agreement:.0%} needed); use fp32"
            )
        return quantised


def _save_openvino(model, path: Path) -> None:
    """``model.xml`` and ``.bin``, each written under a temporary name and renamed (the ``.xml`` last)."""
    import openvino as ov

    def save(tmp: Path) -> None:
        weights = tmp.with_suffix(".bin")
        try:
            ov.save_model(model, str(tmp), compress_to_fp16=False)
            os.replace(weights, path.with_suffix(".bin"))
        finally:
            weights.unlink(missing_ok=True)

    write_atomically(path, save)


def _require(backend: str, precision: str) -> None:
    import importlib.util

    needed = [backend] + (["nncf"] if precision == "int8" else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingPackageError(
            f"backend {backend}: {', '.join(missing)} not installed (pip install -r requirements.txt)"
        )


def calibration_windows(
    cases: Iterable[Dict[str, Any]],
    preprocessing: Callable,
    roi_size: Sequence[int],
    max_cases: int = 4,
    windows_per_case: int = 8,
    seed: int = 0,
) -> List[torch.Tensor]:
    """Calibration windows for int8: ``windows_per_case`` windows of ``roi_size`` from each of the first
    ``max_cases`` cases after ``preprocessing`` (a bundle's inference preprocessing), where the image has
    the most signal (and the rest at random), each ``(1, C, *roi_size)``."""
    from monai.transforms import RandSpatialCropSamples, SpatialPad

    windows: List[torch.Tensor] = []
    for i, case in enumerate(cases):
        if i >= max_cases:
            break
        image = preprocessing(dict(case))["image"]
        image = SpatialPad(roi_size)(image)
        crops = RandSpatialCropSamples(roi_size, num_samples=windows_per_case, random_size=False)
        crops.set_random_state(seed + i)
        windows.extend(torch.as_tensor(c).unsqueeze(0).float() for c in crops(image))
    return windows
