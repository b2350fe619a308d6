"""`llmflow-airgap` entry point.

Subcommands that exist today: `validate` (the distribution files, offline), `schema` (the
JSON schema of `platform.yaml`) and `plan` (install order for a profile). The bundle
commands (lock, build, verify, install) belong to issue 7 and are not offered until they
work, rather than pretending to.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmflow_airgap import __version__
from llmflow_airgap.errors import AirgapError
from llmflow_airgap.platform import Profile, load_platform, platform_json_schema
from llmflow_airgap.validate import DEFAULT_KUBERNETES_VERSION, ValidationInput, validate

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
    text = json.dumps(platform_json_schema(), indent=2, ensure_ascii=False) + "\n"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmflow-airgap",
        description="Validate the LLMFlow distribution files (bundle commands: issue 7).",
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
    sch.set_defaults(func=_cmd_schema)

    plan = sub.add_parser("plan", help="print the install order for a profile")
    plan.add_argument("--platform", type=Path, default=DEFAULT_PLATFORM)
    plan.add_argument("--profile", choices=[p.value for p in Profile], default="standard")
    plan.set_defaults(func=_cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except AirgapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
