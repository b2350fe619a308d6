"""`llmflow-airgap` entry point.

Subcommands: `validate` (the distribution files, offline), `schema` (the JSON schema of
`platform.yaml` or of the lockfile), `plan` (install order for a profile), and the bundle
commands of issue 7 that work today: `keygen`, `lock`, `build`, `verify` and `push` (the
first step of `install`). `install` itself (preflight, helm) is not offered until it works,
rather than pretending to.

Exit codes: 0 success, 1 the bundle or distribution files were refused, 2 an operator error
(bad arguments, unreachable registry, missing input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmflow_airgap import __version__
from llmflow_airgap.build import BuildRequest, build_bundle
from llmflow_airgap.errors import AirgapError
from llmflow_airgap.events import Reporter
from llmflow_airgap.lock import LockRequest, create_lock
from llmflow_airgap.lockfile import dump_lockfile, lockfile_json_schema
from llmflow_airgap.platform import Profile, load_platform, platform_json_schema
from llmflow_airgap.push import describe_plan, plan_push, push_bundle
from llmflow_airgap.registry import parse_mirror
from llmflow_airgap.signing import generate_keypair
from llmflow_airgap.sources import parse_url_mirror
from llmflow_airgap.split import parse_size
from llmflow_airgap.validate import DEFAULT_KUBERNETES_VERSION, ValidationInput, validate
from llmflow_airgap.verify import verify_bundle, verify_parts

DEFAULT_PLATFORM = Path("platform/platform.yaml")


def _repo_root(platform_file: Path) -> Path:
    """`platform.yaml` lives in `<root>/platform/`; values paths are relative to `<root>`."""
    return platform_file.resolve().parent.parent


def _cmd_validate(args: argparse.Namespace) -> int:
    platform_file: Path = args.platform
    charts_dir: Path | None = args.charts_dir
    if charts_dir is not None and not charts_dir.is_dir():
        print(f"error: --charts-dir {charts_dir} is not a directory", file=sys.stderr)
        return 2
    report = validate(
        ValidationInput(
            repo_root=_repo_root(platform_file),
            platform_file=platform_file,
            charts_dir=charts_dir,
            kubernetes_version=args.kubernetes_version,
        )
    )
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "checkedFiles": report.checked_files,
                    "findings": [
                        {
                            "check": str(f.check),
                            "file": f.file,
                            "location": f.location,
                            "message": f.message,
                        }
                        for f in report.findings
                    ],
                    "notices": [
                        {"subject": n.subject, "message": n.message} for n in report.notices
                    ],
                },
                indent=2,
            )
        )
    else:
        for notice in report.notices:
            print(notice, file=sys.stderr)
        for finding in report.findings:
            print(finding)
        verdict = "OK" if report.ok else f"{len(report.findings)} finding(s)"
        print(f"{verdict}; {report.checked_files} files checked", file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_schema(args: argparse.Namespace) -> int:
    schema = lockfile_json_schema() if args.lock else platform_json_schema()
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    platform = load_platform(args.platform)
    profile = Profile(args.profile)
    for step, comp in enumerate(
        (c for c in platform.install_order() if profile in c.profiles), start=1
    ):
        files = " ".join(f"-f {f}" for f in comp.values.layered(profile))
        namespace = "<tenant>" if comp.scope == "tenant" else comp.namespace
        print(
            f"{step:2d}. {comp.name} ({comp.chart.name} {comp.chart.version}) "
            f"-n {namespace} {files}"
        )
    for pattern in platform.manifests_for(profile):
        print(f"    kubectl apply -f {pattern}")
    return 0


def _reporter(args: argparse.Namespace) -> Reporter:
    return Reporter(json_lines=bool(getattr(args, "json", False)))


def _registry_mirrors(args: argparse.Namespace) -> dict[str, str]:
    return dict(parse_mirror(spec) for spec in args.registry_mirror)


def _chart_mirrors(args: argparse.Namespace) -> dict[str, str]:
    return dict(parse_url_mirror(spec) for spec in args.chart_mirror)


def _cmd_keygen(args: argparse.Namespace) -> int:
    generate_keypair(args.private_key, args.public_key, overwrite=args.force)
    _reporter(args).event(
        "keygen.done",
        f"wrote {args.private_key} (keep it secret) and {args.public_key} (ship it to sites)",
        privateKey=str(args.private_key),
        publicKey=str(args.public_key),
    )
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    reporter = _reporter(args)
    platform_file: Path = args.platform
    output: Path = args.output or platform_file.with_name("platform.lock.yaml")
    lock = create_lock(
        LockRequest(
            platform_file=platform_file,
            registry_mirrors=_registry_mirrors(args),
            chart_mirrors=_chart_mirrors(args),
            charts_dir=args.charts_dir,
            models_dir=args.models_dir,
            wheelhouse=args.wheelhouse,
            profile=Profile(args.profile) if args.profile else None,
            skip_models=args.skip_models,
        ),
        reporter,
    )
    dump_lockfile(lock, output)
    reporter.event(
        "lock.done",
        f"wrote {output}: {len(lock.images)} images, {len(lock.charts)} charts, "
        f"{len(lock.models)} models, {len(lock.wheels)} wheels",
        lockfile=str(output),
        images=len(lock.images),
        charts=len(lock.charts),
        models=len(lock.models),
        wheels=len(lock.wheels),
    )
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    build_bundle(
        BuildRequest(
            lockfile=args.lock,
            output=args.output,
            signing_key=args.key,
            registry_mirrors=_registry_mirrors(args),
            chart_mirrors=_chart_mirrors(args),
            charts_dir=args.charts_dir,
            models_dir=args.models_dir,
            wheelhouse=args.wheelhouse,
            split_size=parse_size(args.split_size) if args.split_size else None,
            parts_dir=args.parts_dir,
        ),
        _reporter(args),
    )
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    reporter = _reporter(args)
    if args.dry_run:
        for line in describe_plan(plan_push(args.bundle), args.registry):
            print(line)
        return 0
    if not args.skip_verify:
        if args.public_key is None:
            print("error: --public-key is required (or --skip-verify)", file=sys.stderr)
            return 2
        if not verify_bundle(args.bundle, args.public_key, reporter).ok:
            return 1
    chunk = parse_size(args.chunk_size) if args.chunk_size else None
    push_bundle(args.bundle, args.registry, reporter, chunk_size=chunk, state_file=args.state_file)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.bundle.is_file() and args.bundle.name.endswith(".sha256sums"):
        parts = verify_parts(args.bundle, _reporter(args))
        return 0 if parts.ok else 1
    if args.public_key is None:
        print("error: --public-key is required to verify a bundle", file=sys.stderr)
        return 2
    report = verify_bundle(args.bundle, args.public_key, _reporter(args))
    return 0 if report.ok else 1


def _add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-mirror",
        action="append",
        default=[],
        metavar="HOST=ENDPOINT",
        help="reach images of HOST through ENDPOINT (e.g. docker.io=127.0.0.1:5000 or "
        "nvcr.io=https://mirror.example/); references are never rewritten. Repeatable.",
    )
    parser.add_argument(
        "--chart-mirror",
        action="append",
        default=[],
        metavar="URL=URL",
        help="fetch Helm repository URLs under the first prefix from the second. Repeatable.",
    )
    parser.add_argument(
        "--charts-dir", type=Path, default=None, help="local <name>-<version>.tgz chart archives"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="downloaded model snapshots: a Hugging Face cache "
        "(models--<org>--<name>/snapshots/<revision>/) or <org>/<name>/<revision>/",
    )
    parser.add_argument(
        "--wheelhouse", type=Path, default=None, help="directory of wheels (pip download -d)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmflow-airgap",
        description="Validate the LLMFlow distribution files; lock, build and verify the "
        "offline bundle.",
        epilog="Typical flow: keygen once; lock (online side) -> build -> carry the bundle "
        "across the air gap -> verify with the public key. --json prints one JSON event per "
        "line on stdout for CI; people get progress on stderr.",
    )
    parser.add_argument("--version", action="version", version=f"llmflow-airgap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    val = sub.add_parser("validate", help="check platform.yaml, helm-values and manifests")
    val.add_argument("--platform", type=Path, default=DEFAULT_PLATFORM)
    val.add_argument(
        "--charts-dir",
        type=Path,
        default=None,
        help="directory of upstream chart reference copies (values.yaml, values.schema.json)",
    )
    val.add_argument("--kubernetes-version", default=DEFAULT_KUBERNETES_VERSION)
    val.add_argument("--json", action="store_true", help="machine-readable report")
    val.set_defaults(func=_cmd_validate)

    sch = sub.add_parser("schema", help="print the JSON schema of platform.yaml")
    sch.add_argument("-o", "--output", help="write to this file instead of stdout")
    sch.add_argument("--lock", action="store_true", help="the lockfile schema instead")
    sch.set_defaults(func=_cmd_schema)

    plan = sub.add_parser("plan", help="print the install order for a profile")
    plan.add_argument("--platform", type=Path, default=DEFAULT_PLATFORM)
    plan.add_argument("--profile", choices=[p.value for p in Profile], default="standard")
    plan.set_defaults(func=_cmd_plan)

    keygen = sub.add_parser(
        "keygen",
        help="create the Ed25519 key pair that signs bundles",
        description="Write an Ed25519 private key (PEM PKCS#8, mode 0600) and its public key "
        "(PEM). Sites verify bundles with the public key, with `verify` or with openssl "
        "pkeyutl -verify -pubin -inkey PUB -rawin -in manifest.json -sigfile manifest.json.sig.",
    )
    keygen.add_argument("--private-key", type=Path, required=True)
    keygen.add_argument("--public-key", type=Path, required=True)
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    keygen.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    keygen.set_defaults(func=_cmd_keygen)

    lock = sub.add_parser(
        "lock",
        help="resolve platform.yaml into a lockfile (digests and sha256 of everything)",
        description="Resolve every image tag to its index and per-platform manifest digests "
        "(OCI distribution API), every chart to the sha256 of its archive, every model to the "
        "sha256 of each file of its pinned revision, and every wheel of the wheelhouse.",
    )
    lock.add_argument("--platform", type=Path, default=DEFAULT_PLATFORM)
    lock.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="lockfile to write (.yaml or .json; default platform.lock.yaml beside platform)",
    )
    lock.add_argument(
        "--profile",
        choices=[p.value for p in Profile],
        default=None,
        help="only components and models of this profile (default: all)",
    )
    lock.add_argument("--skip-models", action="store_true", help="lock no model weights")
    _add_sources(lock)
    lock.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    lock.set_defaults(func=_cmd_lock)

    build = sub.add_parser(
        "build",
        help="download everything the lockfile pins into a signed bundle directory",
        description="Build a bundle directory: one OCI image layout for all images (shared "
        "blobs once), charts, models, wheels, SBOM (CycloneDX 1.5), checksums.txt and an "
        "Ed25519-signed manifest.json. Everything streams through <bundle>/.partial and is "
        "digest-checked before it is kept; run the same command again to resume.",
    )
    build.add_argument("--lock", type=Path, required=True, help="the lockfile")
    build.add_argument("-o", "--output", type=Path, required=True, help="bundle directory")
    build.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    build.add_argument(
        "--split-size",
        default=None,
        metavar="SIZE",
        help="also write the bundle as a tar cut into parts of SIZE (e.g. 4G)",
    )
    build.add_argument(
        "--parts-dir", type=Path, default=None, help="where parts go (default: beside the bundle)"
    )
    _add_sources(build)
    build.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    build.set_defaults(func=_cmd_build)

    verify = sub.add_parser(
        "verify",
        help="refuse a bundle that is not exactly what was signed",
        description="Check the signature of manifest.json, then that no file is missing, "
        "changed or extra, that every image blob hashes to its name, that checksums.txt "
        "agrees, and that the image layout is complete. Given a <name>.tar.sha256sums file "
        "instead, check the split parts it lists (before unpacking). Exit 1 when refused.",
    )
    verify.add_argument("bundle", type=Path, help="bundle directory, or a .tar.sha256sums file")
    verify.add_argument("--public-key", type=Path, default=None, help="Ed25519 public key")
    verify.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    verify.set_defaults(func=_cmd_verify)

    push = sub.add_parser(
        "push",
        help="install step 1: push the bundle's images to the site registry",
        description="Verify the bundle, then push every image to the site registry through "
        "the OCI distribution API with the manifests' exact bytes (digests unchanged). Blobs "
        "the registry already has are skipped (HEAD), blobs another repository of this run "
        "holds are mounted, the rest uploaded; run again to finish an interrupted push.",
    )
    push.add_argument("bundle", type=Path)
    push.add_argument("--registry", required=True, help="site registry host[:port] or URL")
    push.add_argument("--public-key", type=Path, default=None, help="verify with this key first")
    push.add_argument("--skip-verify", action="store_true", help="trust an already verified bundle")
    push.add_argument(
        "--chunk-size",
        default=None,
        metavar="SIZE",
        help="upload in PATCH chunks of SIZE (e.g. 64M) instead of one PUT",
    )
    push.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="remember chunked upload sessions here (64M chunks unless --chunk-size), so a "
        "killed push continues mid-blob when run again with the same file",
    )
    push.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    push.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    push.set_defaults(func=_cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except AirgapError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"event": "error", "message": str(exc)}), flush=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
