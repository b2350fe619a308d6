"""`llmflow-airgap` entry point.

Subcommands: `validate` (the distribution files, offline), `schema` (the JSON schema of
`platform.yaml` or of the lockfile), `plan` (the install plan of a profile from
platform.yaml and its lockfile), and the bundle
commands: `keygen`, `lock`, `build`, `verify`, `push` (images only), `install` (preflight,
pushes, Helm releases with health gates, resumable), `diff` (differential bundle), `status`
and `prune`.

Exit codes: 0 success, 1 the bundle or distribution files were refused (or preflight refused
the install, or `status` found the site not up to date), 2 an operator error (bad arguments,
unreachable registry, missing input, a failed release or gate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmflow_airgap import __version__
from llmflow_airgap.build import BuildRequest, build_bundle
from llmflow_airgap.bundle import HELM_BINARY
from llmflow_airgap.errors import AirgapError, LockfileError
from llmflow_airgap.events import Reporter
from llmflow_airgap.lock import LockRequest, create_lock
from llmflow_airgap.lockfile import dump_lockfile, lockfile_json_schema
from llmflow_airgap.platform import Profile, platform_json_schema
from llmflow_airgap.push import describe_plan, plan_push, push_bundle
from llmflow_airgap.registry import parse_mirror
from llmflow_airgap.signing import generate_keypair
from llmflow_airgap.sources import parse_url_mirror
from llmflow_airgap.split import parse_size
from llmflow_airgap.validate import DEFAULT_KUBERNETES_VERSION, ValidationInput, validate
from llmflow_airgap.verify import verify_bundle, verify_parts

if TYPE_CHECKING:
    from llmflow_airgap.helm.base import HelmDriver
    from llmflow_airgap.install import PostInstallStep
    from llmflow_airgap.kube import KubeAccess

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
    from llmflow_airgap.plan import PlanInputs, build_platform_plan, resolve_lock_file

    result = build_platform_plan(
        PlanInputs(
            platform_file=args.platform,
            lock_file=resolve_lock_file(args.platform, args.lock),
            profile=Profile(args.profile),
            registry=args.registry,
            work_dir=args.work_dir,
            tenants=tuple(args.tenant),
            tenant_values=args.tenant_values,
            dify_plugin_public_key=args.dify_plugin_public_key,
            min_free_bytes=parse_size(args.min_free),
        )
    )
    if args.json:
        print(json.dumps({"event": "install.plan", **result.document}, sort_keys=True))
    else:
        for line in result.text:
            print(line)
    return 0


def _reporter(args: argparse.Namespace) -> Reporter:
    return Reporter(json_lines=bool(getattr(args, "json", False)))


def _registry_mirrors(args: argparse.Namespace) -> dict[str, str]:
    return dict(parse_mirror(spec) for spec in args.registry_mirror)


def _chart_mirrors(args: argparse.Namespace) -> dict[str, str]:
    return dict(parse_url_mirror(spec) for spec in args.chart_mirror)


def _dify_plugin_mirrors(args: argparse.Namespace) -> dict[str, str]:
    mirrors = {}
    for spec in args.dify_plugin_mirror:
        try:
            source, target = parse_url_mirror(spec)
        except LockfileError as exc:
            raise LockfileError(
                f"--dify-plugin-mirror {spec!r} must look like "
                "https://marketplace.dify.ai=http://mirror"
            ) from exc
        mirrors[source] = target
    return mirrors


def _cmd_keygen(args: argparse.Namespace) -> int:
    if args.kind == "dify-plugin":
        from llmflow_airgap.difyplugin import generate_plugin_keypair

        generate_plugin_keypair(args.private_key, args.public_key, overwrite=args.force)
        _reporter(args).event(
            "keygen.done",
            f"wrote {args.private_key} (RSA-4096, re-signs Dify plugins; keep it secret) and "
            f"{args.public_key} (mount into the plugin daemon, list it in "
            "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS)",
            privateKey=str(args.private_key),
            publicKey=str(args.public_key),
            kind=args.kind,
        )
        return 0
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
            dify_plugins_dir=args.dify_plugins_dir,
            dify_plugin_wheels=args.dify_plugin_wheels,
            download_plugin_wheels=args.download_plugin_wheels,
            pip_command=tuple(args.pip.split()) if args.pip else (),
            dify_plugin_source_keys=tuple(args.dify_plugin_source_key),
            dify_plugin_mirrors=_dify_plugin_mirrors(args),
        ),
        reporter,
    )
    dump_lockfile(lock, output)
    reporter.event(
        "lock.done",
        f"wrote {output}: {len(lock.images)} images, {len(lock.charts)} charts, "
        f"{len(lock.models)} models, {len(lock.wheels)} wheels, "
        f"{len(lock.dify_plugins)} Dify plugins",
        lockfile=str(output),
        images=len(lock.images),
        charts=len(lock.charts),
        models=len(lock.models),
        wheels=len(lock.wheels),
        difyPlugins=len(lock.dify_plugins),
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
            platform_file=args.platform,
            helm_binary=args.helm_binary,
            dify_plugins_dir=args.dify_plugins_dir,
            dify_plugin_wheels=args.dify_plugin_wheels,
            dify_plugin_key=args.dify_plugin_key,
            model_artifacts=args.model_artifacts,
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


def _cmd_verify_plugin(args: argparse.Namespace) -> int:
    from llmflow_airgap.difyplugin import load_plugin_public_key, verify_package

    keys = [load_plugin_public_key(path) for path in args.public_key]
    reporter = _reporter(args)
    refused = 0
    for package in args.package:
        try:
            data = package.read_bytes()
        except OSError as exc:
            print(f"error: cannot read {package}: {exc}", file=sys.stderr)
            return 2
        check = verify_package(data, keys)
        refused += not check.ok
        reporter.event(
            "dify-plugin.verified" if check.ok else "dify-plugin.refused",
            f"OK {package}: {check.unique_identifier} ({check.category or 'no category'})"
            if check.ok
            else f"REFUSED {package}: {check.reason}",
            package=str(package),
            ok=check.ok,
            uniqueIdentifier=check.unique_identifier,
        )
    return 1 if refused else 0


def _kube_access(args: argparse.Namespace) -> KubeAccess:
    from llmflow_airgap.kube import KubeAccess, KubernetesError, load_kubeconfig

    if args.kube_server:
        if args.kube_token_file is None:
            raise KubernetesError("--kube-server needs --kube-token-file")
        token = args.kube_token_file.read_text(encoding="utf-8").strip()
        ca = args.kube_ca_file.read_text(encoding="ascii") if args.kube_ca_file else None
        return KubeAccess(server=args.kube_server.rstrip("/"), token=token, ca_pem=ca)
    path = args.kubeconfig or Path(os.path.expanduser("~/.kube/config"))
    return load_kubeconfig(path, args.kube_context)


def _helm_kubeconfig(access: KubeAccess, work_dir: Path) -> Path:
    """The kubeconfig Helm reads: the operator's, or one written (0600) from token + CA."""
    import base64

    import yaml

    if access.kubeconfig is not None:
        return access.kubeconfig
    cluster: dict[str, object] = {"server": access.server}
    if access.ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(access.ca_pem.encode()).decode()
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "site", "cluster": cluster}],
        "users": [{"name": "installer", "user": {"token": access.token}}],
        "contexts": [{"name": "site", "context": {"cluster": "site", "user": "installer"}}],
        "current-context": "site",
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(document, handle)
    return path


def _helm_driver(args: argparse.Namespace, access: KubeAccess | None) -> HelmDriver:
    kubeconfig = _helm_kubeconfig(access, args.work_dir) if access is not None else None
    context = access.context if access is not None else None
    if args.helm_driver == "binary":
        from llmflow_airgap.helm.binary import BinaryHelmDriver

        binary = args.helm_binary or args.bundle / HELM_BINARY
        return BinaryHelmDriver(binary, args.work_dir, kubeconfig, context)
    from llmflow_airgap.helm.sdk import SdkHelmDriver

    return SdkHelmDriver(kubeconfig, context)


def _dify_plugin_steps(args: argparse.Namespace) -> tuple[PostInstallStep, ...]:
    """`post/dify-plugins/<ns>` for every `--dify-console NS=URL` (with its workspace id)."""
    from llmflow_airgap.dify_plugin_install import DifyPluginsStep
    from llmflow_airgap.difyplugin_bundle import DIFY_PLUGINS_DIR

    consoles = dict(_pair(spec, "--dify-console", "NAMESPACE=URL") for spec in args.dify_console)
    workspaces = dict(
        _pair(spec, "--dify-workspace", "NAMESPACE=ID") for spec in args.dify_workspace
    )
    missing = sorted(set(consoles) - set(workspaces))
    if missing or set(workspaces) - set(consoles):
        raise AirgapError(
            "--dify-console and --dify-workspace must name the same namespaces "
            f"(without a workspace id: {', '.join(missing) or '-'}; without a console: "
            f"{', '.join(sorted(set(workspaces) - set(consoles))) or '-'})"
        )
    return tuple(
        DifyPluginsStep(namespace, url, workspaces[namespace], args.bundle / DIFY_PLUGINS_DIR)
        for namespace, url in consoles.items()
    )


def _pair(spec: str, option: str, shape: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key or not value:
        raise AirgapError(f"{option} {spec!r}: expected {shape}")
    return key, value


def _cmd_install(args: argparse.Namespace) -> int:
    from llmflow_airgap.install import (
        PlanRequest,
        PreflightFailed,
        build_plan,
        default_platform_file,
        run_install,
    )
    from llmflow_airgap.kube import KubeClient

    reporter = _reporter(args)
    platform_file = args.platform or default_platform_file(args.bundle, DEFAULT_PLATFORM)
    plan = build_plan(
        PlanRequest(
            bundle=args.bundle,
            platform_file=platform_file,
            registry=args.registry,
            profile=Profile(args.profile),
            work_dir=args.work_dir,
            tenants=tuple(args.tenant),
            tenant_values=args.tenant_values,
            min_free_bytes=parse_size(args.min_free),
            post_install=_dify_plugin_steps(args),
        )
    )
    if args.dry_run:
        if args.json:
            print(json.dumps({"event": "install.plan", **plan.to_json()}, sort_keys=True))
        else:
            for line in plan.lines():
                print(line)
        return 0
    if not args.skip_verify:
        if args.public_key is None:
            print("error: --public-key is required (or --skip-verify)", file=sys.stderr)
            return 2
        if not verify_bundle(args.bundle, args.public_key, reporter).ok:
            return 1
    access = _kube_access(args)
    driver = _helm_driver(args, access)
    chunk = parse_size(args.chunk_size) if args.chunk_size else None
    with KubeClient(access) as kube:
        try:
            run_install(
                plan,
                work_dir=args.work_dir,
                driver=driver,
                kube=kube,
                reporter=reporter,
                resume=args.resume,
                chunk_size=chunk,
            )
        except PreflightFailed as exc:
            reporter.event("install.refused", f"REFUSED: {exc}", detail=str(exc))
            return 1
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from llmflow_airgap.diff import DiffRequest, diff_bundle

    if args.public_key is not None and not verify_bundle(args.bundle, args.public_key).ok:
        print(f"error: {args.bundle} does not verify; refusing to cut a diff", file=sys.stderr)
        return 1
    diff_bundle(
        DiffRequest(
            bundle=args.bundle,
            output=args.output,
            signing_key=args.key,
            against_registry=args.registry,
            against_lock=args.against_lock,
            against_bundle=args.against_bundle,
        ),
        _reporter(args),
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from llmflow_airgap.status import bundle_status

    driver = None
    if args.kubeconfig is not None or args.kube_server:
        driver = _helm_driver(args, _kube_access(args))
    report = bundle_status(args.bundle, args.work_dir, args.registry, driver)
    if args.json:
        print(json.dumps({"event": "status", **report.document}, sort_keys=True))
    else:
        for line in report.lines:
            print(line)
    return 0 if report.up_to_date else 1


def _cmd_prune(args: argparse.Namespace) -> int:
    from llmflow_airgap.install import history_locks
    from llmflow_airgap.lockfile import load_lockfile
    from llmflow_airgap.prune import prune_registry

    paths = list(args.lock) if args.lock else history_locks(args.work_dir)
    if not paths:
        print(
            f"error: no lockfiles (none under {args.work_dir}/history, no --lock)", file=sys.stderr
        )
        return 2
    if args.keep < 1:
        print("error: --keep must be at least 1", file=sys.stderr)
        return 2
    history = [load_lockfile(p) for p in paths]
    prune_registry(args.registry, history, args.keep, apply=args.apply, reporter=_reporter(args))
    return 0


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
    parser.add_argument(
        "--dify-plugins-dir",
        type=Path,
        default=None,
        help="directory of the source .difypkg files platform.yaml's difyPlugins name",
    )
    parser.add_argument(
        "--dify-plugin-wheels",
        type=Path,
        default=None,
        help="root of the per-plugin wheelhouses (<author>__<name>-<version>/*.whl)",
    )


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(".llmflow-install"),
        help="install state, push sessions, history (default .llmflow-install)",
    )
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default ~/.kube/config")
    parser.add_argument("--kube-context", default=None)
    parser.add_argument("--kube-server", default=None, help="API server URL (with a token)")
    parser.add_argument("--kube-token-file", type=Path, default=None, help="bearer token file")
    parser.add_argument("--kube-ca-file", type=Path, default=None, help="API server CA (PEM)")
    parser.add_argument(
        "--helm-driver",
        choices=["sdk", "binary"],
        default="sdk",
        help="sdk: helm-python-sdk (the helm extra); binary: a helm executable",
    )
    parser.add_argument(
        "--helm-binary",
        type=Path,
        default=None,
        help="helm executable (default <bundle>/tools/helm)",
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

    plan = sub.add_parser(
        "plan",
        help="print the install plan of a profile from platform.yaml (and its lockfile)",
        description="Print the plan `install --dry-run` would print for a bundle built from "
        "this lockfile, built by the same code (no bundle needed): preflight, chart pushes, "
        "Namespaces server-side applied before the releases, Helm releases in dependency "
        "order with values files, pinned images and health gates, the other manifests "
        "server-side applied after the last release, post-install steps. Only the image "
        "push section differs: it lists the lockfile's images (blob counts need the bundle). "
        "Without a lockfile (none beside platform.yaml, no --lock) the same plan is printed "
        "with every digest marked as resolved by `lock`.",
    )
    plan.add_argument("--platform", type=Path, default=DEFAULT_PLATFORM)
    plan.add_argument(
        "--lock",
        type=Path,
        default=None,
        help="the lockfile (default: platform.lock.yaml beside --platform when it exists; "
        "else a plan without digests)",
    )
    plan.add_argument("--profile", choices=[p.value for p in Profile], default="standard")
    plan.add_argument(
        "--registry", default=None, help="site registry host[:port] (default: platform.yaml's)"
    )
    plan.add_argument(
        "--tenant",
        action="append",
        default=[],
        help="tenant namespace for tenant-scoped components (as install). Repeatable.",
    )
    plan.add_argument(
        "--tenant-values",
        type=Path,
        default=None,
        help="directory of per-tenant Dify overlays (as install)",
    )
    plan.add_argument(
        "--dify-plugin-public-key",
        type=Path,
        default=None,
        help="the Dify plugin public key the bundle will carry (shows the steps that install it)",
    )
    plan.add_argument("--work-dir", type=Path, default=Path(".llmflow-install"))
    plan.add_argument("--min-free", default="1G", metavar="SIZE", help="free disk required")
    plan.add_argument("--json", action="store_true", help="the plan as one JSON document")
    plan.set_defaults(func=_cmd_plan)

    keygen = sub.add_parser(
        "keygen",
        help="create the Ed25519 key pair that signs bundles",
        description="Write an Ed25519 private key (PEM PKCS#8, mode 0600) and its public key "
        "(PEM). Sites verify bundles with the public key, with `verify` or with openssl "
        "pkeyutl -verify -pubin -inkey PUB -rawin -in manifest.json -sigfile manifest.json.sig.",
    )
    keygen.add_argument(
        "--kind",
        choices=["bundle", "dify-plugin"],
        default="bundle",
        help="bundle: Ed25519 for the manifest (default); dify-plugin: RSA-4096 PKCS#1 in the "
        "format the Dify plugin daemon verifies re-signed plugins with",
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
        "sha256 of each file of its pinned revision, every wheel of the wheelhouse, and every "
        "Dify plugin package (downloaded from the marketplace or its source, refused unless "
        "its signature verifies with --dify-plugin-source-key or it matches the sha256 "
        "platform.yaml pins).",
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
    lock.add_argument(
        "--download-plugin-wheels",
        action="store_true",
        help="fill --dify-plugin-wheels with `pip download --only-binary=:all:` for the plugin "
        "daemon's CPython 3.12 on manylinux (connected side)",
    )
    lock.add_argument("--pip", default=None, help="pip command for downloads (default: found)")
    lock.add_argument(
        "--dify-plugin-source-key",
        type=Path,
        action="append",
        default=[],
        help="RSA PUBLIC KEY PEM the source plugin packages must be signed with (Dify's "
        "official key, pkg/license/public_key/PUBLIC_KEY.pem of dify-plugin-daemon, for "
        "marketplace packages); repeatable. A plugin without a sha256 in platform.yaml needs it",
    )
    lock.add_argument(
        "--dify-plugin-mirror",
        action="append",
        default=[],
        metavar="URL=URL",
        help="download plugin sources under the first prefix from the second (e.g. "
        "https://marketplace.dify.ai=http://mirror/dify); the lockfile keeps the first. "
        "Repeatable.",
    )
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
    build.add_argument(
        "--platform",
        type=Path,
        default=None,
        help="also ship this platform.yaml with its values, manifests and monitoring files "
        "under distribution/ (what install reads by default)",
    )
    build.add_argument(
        "--helm-binary", type=Path, default=None, help="ship this helm executable as tools/helm"
    )
    build.add_argument(
        "--dify-plugin-key",
        type=Path,
        default=None,
        help="RSA private key (keygen --kind dify-plugin) that re-signs the Dify plugins",
    )
    build.add_argument(
        "--model-artifacts",
        action="store_true",
        help="also pack every model as a CNCF ModelPack OCI artifact (models/<name>:<revision>) "
        "in the image layout, pushed with the images; its layers are hard links to the model "
        "files, so it adds only a few KiB",
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

    vplug = sub.add_parser(
        "verify-plugin",
        help="check .difypkg signatures the way the Dify plugin daemon does",
        description="Verify Dify plugin packages (RSA PKCS#1 v1.5 / SHA-256 over the entries' "
        "hashes and the signing time, as dify-plugin-daemon 0.6.1) with trusted public keys "
        "(RSA PUBLIC KEY PEM). Exit 1 when any package is refused.",
    )
    vplug.add_argument("package", type=Path, nargs="+")
    vplug.add_argument("--public-key", type=Path, action="append", required=True)
    vplug.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    vplug.set_defaults(func=_cmd_verify_plugin)

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

    install = sub.add_parser(
        "install",
        help="preflight, push, helm upgrade --install in order with health gates (resumable)",
        description="Verify the bundle; run blocking preflight checks (Kubernetes version, "
        "Ready nodes, nvidia.com/gpu, default StorageClass, registry writable, free disk); push "
        "images and charts to the site registry; helm upgrade --install every component of "
        "the profile in dependency order with the air-gap overlay pinned by digest; wait for "
        "each component's health gates; run post-install steps. Finished steps are recorded "
        "in <work-dir>/install-state.json; --resume skips them. --dry-run prints the plan.",
    )
    install.add_argument("bundle", type=Path)
    install.add_argument("--registry", required=True, help="site registry host[:port] or URL")
    install.add_argument("--profile", choices=[p.value for p in Profile], default="standard")
    install.add_argument(
        "--platform",
        type=Path,
        default=None,
        help="platform.yaml (values paths are relative to its parent's parent; default: the "
        "bundle's distribution/ copy, else platform/platform.yaml)",
    )
    install.add_argument(
        "--tenant",
        action="append",
        default=[],
        help="tenant namespace for tenant-scoped components (Dify). Repeatable.",
    )
    install.add_argument(
        "--tenant-values",
        type=Path,
        default=None,
        metavar="DIR",
        help="install one dify release per <tenant>.values.yaml that `llmflow tenant apply` "
        "rendered in DIR (instance-per-tenant; default: none)",
    )
    install.add_argument(
        "--dify-console",
        action="append",
        default=[],
        metavar="NAMESPACE=URL",
        help="Dify base URL of the release in NAMESPACE as the install host reaches it: "
        "installs the bundle's Dify plugins there after the releases. Repeatable.",
    )
    install.add_argument(
        "--dify-workspace",
        action="append",
        default=[],
        metavar="NAMESPACE=ID",
        help="Dify workspace id for --dify-console NAMESPACE. Repeatable.",
    )
    install.add_argument("--resume", action="store_true", help="skip steps finished before")
    install.add_argument("--dry-run", action="store_true", help="print the plan, touch nothing")
    install.add_argument("--public-key", type=Path, default=None, help="verify with this key")
    install.add_argument("--skip-verify", action="store_true", help="trust a verified bundle")
    install.add_argument("--min-free", default="1G", metavar="SIZE", help="free disk required")
    install.add_argument("--chunk-size", default=None, metavar="SIZE", help="upload chunk size")
    _add_cluster(install)
    install.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    install.set_defaults(func=_cmd_install)

    diff = sub.add_parser(
        "diff",
        help="cut a differential bundle holding only the image blobs the site lacks",
        description="From a full bundle, write a signed differential bundle without the image "
        "blobs the site already has: asked from its registry (--registry), derived from the "
        "lockfile of its last install (--against-lock) or from the previous bundle "
        "(--against-bundle). verify accepts it by its manifest flag; push mounts the absent "
        "blobs at the site and fails if the site lacks one.",
    )
    diff.add_argument("bundle", type=Path, help="the full bundle")
    diff.add_argument("-o", "--output", type=Path, required=True)
    diff.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    diff.add_argument("--public-key", type=Path, default=None, help="verify the input first")
    against = diff.add_mutually_exclusive_group(required=True)
    against.add_argument("--registry", default=None, help="the site registry to ask")
    against.add_argument("--against-lock", type=Path, default=None)
    against.add_argument("--against-bundle", type=Path, default=None)
    diff.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    diff.set_defaults(func=_cmd_diff)

    status = sub.add_parser(
        "status",
        help="what is installed (state file, cluster, registry) against a bundle",
        description="Compare a bundle with the install state file, with the cluster's Helm "
        "releases (when cluster access is given) and with the site registry (when --registry "
        "is given). Exit 1 when the site is not up to date with the bundle.",
    )
    status.add_argument("bundle", type=Path)
    status.add_argument("--registry", default=None, help="site registry host[:port] or URL")
    _add_cluster(status)
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.set_defaults(func=_cmd_status)

    prune = sub.add_parser(
        "prune",
        help="delete site-registry images no recent release references (dry run by default)",
        description="Keep every image, chart and model artifact (models/<name>:<revision>) the "
        "--keep newest lockfiles reference (from <work-dir>/history, written by each completed "
        "install, or --lock, newest first); delete the other tagged manifests of LLMFlow's "
        "repositories with --apply. The "
        "registry must allow deletes; run its garbage collector afterwards to free space.",
    )
    prune.add_argument("--registry", required=True)
    prune.add_argument("--keep", type=int, default=2, help="releases to keep (default 2)")
    prune.add_argument("--lock", type=Path, action="append", default=[], help="newest first")
    prune.add_argument("--work-dir", type=Path, default=Path(".llmflow-install"))
    prune.add_argument("--apply", action="store_true", help="really delete")
    prune.add_argument("--json", action="store_true", help="JSON-lines events on stdout")
    prune.set_defaults(func=_cmd_prune)
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
