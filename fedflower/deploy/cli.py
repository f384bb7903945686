"""``fedflower-deploy``: credentials, site data files, the local federation demo, ``flwr run``.

Subcommands::

    fedflower-deploy certs --out DIR --nodes N [--host 127.0.0.1 --host localhost]
    fedflower-deploy make-data --out DIR --nodes N [--format csv|npz] [OVERRIDE ...]
    fedflower-deploy demo [--nodes 3] [--data csv|npz|partition] [--insecure]
                          [--backends tensorflow,jax,torch] [OVERRIDE ...]
    fedflower-deploy simulate [--nodes 3] [--app DIR] [OVERRIDE ...]
    fedflower-deploy export MODEL --to tflite [...]      (same as ``fedflower export``)

``OVERRIDE`` arguments are Hydra overrides, exactly as on the ``fedflower`` command line.
Errors the user can fix end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fedflower.errors import FedflowerError
from fedflower.startup import set_environment_defaults

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedflower-deploy",
        description="Run fedflower on a real Flower federation (SuperLink + SuperNodes).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    certs = sub.add_parser("certs", help="make a demo CA, SuperLink certificate, node key pairs")
    certs.add_argument("--out", default="outputs/deploy/certs", help="output directory")
    certs.add_argument("--nodes", type=int, default=3, help="SuperNode key pairs to make")
    certs.add_argument(
        "--host",
        action="append",
        help="IP or DNS name the SuperLink certificate is valid for (repeatable; "
        "default 127.0.0.1 and localhost)",
    )

    data = sub.add_parser("make-data", help="write each site's share of a dataset to a file")
    data.add_argument("--out", default="outputs/deploy/data", help="output directory")
    data.add_argument("--nodes", type=int, default=3, help="number of sites (num_clients)")
    data.add_argument("--format", choices=("csv", "npz"), default="csv")
    data.add_argument("overrides", nargs="*", help="Hydra overrides (dataset=..., ...)")

    demo = sub.add_parser("demo", help="secure local federation of processes, one run")
    demo.add_argument("--nodes", type=int, default=3, help="SuperNodes (= num_clients)")
    demo.add_argument("--data", choices=("csv", "npz", "partition"), default="csv")
    demo.add_argument("--workdir", default="outputs/deploy-demo")
    demo.add_argument("--insecure", action="store_true", help="no TLS, no node auth")
    demo.add_argument(
        "--cold-tasks",
        action="store_true",
        help="Flower's own SuperNodes: a new flwr-clientapp process per task, 3 s idle pulls",
    )
    demo.add_argument(
        "--backends",
        default="",
        help="Keras backends cycled over the SuperNodes, e.g. tensorflow,jax,torch",
    )
    demo.add_argument("--timeout", type=float, default=1800.0, help="seconds for the run")
    demo.add_argument("overrides", nargs="*", help="Hydra overrides of the experiment")

    sim = sub.add_parser("simulate", help="flwr run in Flower's local simulation, cleaned up")
    sim.add_argument("--nodes", type=int, default=3, help="simulated SuperNodes")
    sim.add_argument("--app", default=".", help="the Flower app directory (pyproject.toml)")
    sim.add_argument("--workdir", default="outputs/flwr-simulation")
    sim.add_argument("--timeout", type=float, default=1800.0)
    sim.add_argument("overrides", nargs="*", help="Hydra overrides of the experiment")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedflower-deploy`` console script."""
    set_environment_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        from fedflower.export import main as export_main

        return export_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command in ("make-data", "demo"):
        from fedflower.backend import quiet_tensorflow_import

        quiet_tensorflow_import()  # no oneDNN/absl start-up banner
    try:
        if args.command == "certs":
            from fedflower.deploy.certs import DEFAULT_HOSTS, make_credentials

            made = make_credentials(args.out, args.nodes, tuple(args.host or DEFAULT_HOSTS))
            print(f"CA certificate        {made.ca_cert}")
            print(f"SuperLink certificate {made.server_cert} (key {made.server_key})")
            for private, public in made.node_keys:
                print(f"SuperNode key pair    {private} / {public}")
        elif args.command == "make-data":
            from fedflower.deploy.demo import write_site_files

            for path in write_site_files(args.overrides, args.nodes, args.out, args.format):
                print(path)
        elif args.command == "demo":
            from fedflower.deploy.demo import demo

            demo(
                args.nodes,
                args.overrides,
                workdir=args.workdir,
                data=args.data,
                secure=not args.insecure,
                warm_tasks=not args.cold_tasks,
                timeout=args.timeout,
                backends=[b.strip() for b in args.backends.split(",") if b.strip()],
            )
        elif args.command == "simulate":
            from fedflower.deploy.demo import simulate

            simulate(args.app, args.overrides, args.nodes, args.workdir, args.timeout)
    except FedflowerError as exc:
        print(f"fedflower-deploy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
