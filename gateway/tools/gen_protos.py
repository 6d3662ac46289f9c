"""Regenerates the Python code of every .proto under protos/ (`make gen`).

The generated modules are committed next to their .proto files so that `import voicegw.v1...`
works for the server and the SDK without a build step. That only stays safe if the committed
code is exactly what the pinned grpcio-tools produces, so `--check` regenerates into a temporary
directory and fails on any difference (CI and tests/test_protos.py run it). protoc's output
depends only on the inputs and the tool version, so the same tree always yields the same bytes.

Usage: python -m gateway.tools.gen_protos [--check] [--lint]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
# Suffixes protoc writes for `foo.proto`: messages, their type stubs, and gRPC stubs.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class GenerationError(RuntimeError):
    """protoc or buf failed; the message carries their output."""


def find_protos(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under the root, relative to it and sorted so runs are reproducible."""
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def expected_outputs(protos: Sequence[Path]) -> list[Path]:
    """Relative paths of all files generation owns: generated modules and package markers."""
    outputs: set[Path] = set()
    for proto in protos:
        stem = proto.with_suffix("")
        outputs.update(stem.parent / f"{stem.name}{suffix}" for suffix in GENERATED_SUFFIXES)
        # Generated modules import each other as packages (`from voicegw.v1 import ...`), so
        # every directory between the root and the module needs an __init__.py.
        for parent in proto.parents:
            if parent != Path("."):
                outputs.add(parent / "__init__.py")
    return sorted(outputs)


def _well_known_include() -> Path:
    import grpc_tools  # the dev dependency that bundles protoc and google/protobuf/*.proto

    return Path(grpc_tools.__file__).parent / "_proto"


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Runs protoc for every .proto into `out_dir`; returns the relative paths it owns."""
    protos = find_protos(proto_root)
    if not protos:
        raise GenerationError(f"no .proto files under {proto_root}")
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{_well_known_include()}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in protos),
    ]
    # protoc resolves the relative file names against -I, so run it from the proto root.
    result = subprocess.run(command, cwd=proto_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GenerationError(f"protoc failed ({result.returncode}):\n{result.stderr.strip()}")
    outputs = expected_outputs(protos)
    for rel in outputs:
        if rel.name == "__init__.py":
            (out_dir / rel).touch()
    missing = [rel for rel in outputs if not (out_dir / rel).is_file()]
    if missing:
        raise GenerationError(f"protoc did not produce: {', '.join(map(str, missing))}")
    return outputs


def _orphans(proto_root: Path, owned: Sequence[Path]) -> list[Path]:
    """Generated modules whose .proto is gone: they would still import and mislead."""
    owned_set = set(owned)
    found = [
        p.relative_to(proto_root)
        for suffix in GENERATED_SUFFIXES
        for p in proto_root.rglob(f"*{suffix}")
    ]
    return sorted(rel for rel in found if rel not in owned_set)


def stale_files(proto_root: Path = PROTO_ROOT) -> list[str]:
    """Describes every generated file that differs from a fresh generation (empty: up to date)."""
    with tempfile.TemporaryDirectory(prefix="voicegw-gen-") as tmp:
        fresh = Path(tmp)
        owned = generate(fresh, proto_root)
        problems: list[str] = []
        for rel in owned:
            current = proto_root / rel
            if not current.is_file():
                problems.append(f"{rel}: missing")
            elif rel.name != "__init__.py" and current.read_bytes() != (fresh / rel).read_bytes():
                problems.append(f"{rel}: differs from a fresh generation")
        problems.extend(f"{rel}: no matching .proto" for rel in _orphans(proto_root, owned))
        return problems


def write_generated(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Regenerates in place; only changed files are rewritten so mtimes stay meaningful."""
    with tempfile.TemporaryDirectory(prefix="voicegw-gen-") as tmp:
        fresh = Path(tmp)
        owned = generate(fresh, proto_root)
        changed: list[Path] = []
        for rel in owned:
            target = proto_root / rel
            if rel.name == "__init__.py":
                if not target.exists():
                    target.touch()
                    changed.append(rel)
                continue
            data = (fresh / rel).read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                changed.append(rel)
        for rel in _orphans(proto_root, owned):
            (proto_root / rel).unlink()
            changed.append(rel)
        return changed


def find_buf() -> Path:
    """The buf binary of this environment (the `buf-bin` wheel puts it next to python)."""
    candidate = Path(sys.executable).parent / "buf"
    if candidate.is_file():
        return candidate
    found = shutil.which("buf")
    if found is None:
        raise GenerationError("buf not found: install the dev dependencies (buf-bin)")
    return Path(found)


def buf_problems(repo_root: Path = REPO_ROOT) -> list[str]:
    """Output of `buf lint` and `buf format --diff`, one entry per failing command."""
    buf = str(find_buf())
    problems: list[str] = []
    for args in (["lint"], ["format", "--diff", "--exit-code"]):
        result = subprocess.run(
            [buf, *args], cwd=repo_root, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            problems.append(f"buf {' '.join(args)} (exit {result.returncode}):\n{output}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.tools.gen_protos",
        description="Regenerate (or check) the Python code generated from protos/.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 listing generated files that are stale",
    )
    parser.add_argument(
        "--lint", action="store_true", help="also run buf lint and buf format --diff"
    )
    args = parser.parse_args(argv)
    failed = False
    try:
        if args.check:
            stale = stale_files()
            for line in stale:
                print(f"stale: protos/{line}", file=sys.stderr)
            if stale:
                print("run `make gen` to regenerate", file=sys.stderr)
                failed = True
        else:
            for rel in write_generated():
                print(f"updated protos/{rel}")
        if args.lint:
            for problem in buf_problems():
                print(problem, file=sys.stderr)
                failed = True
    except GenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
