"""The ``fastnn`` command line: ``fastnn info``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _info(_args) -> int:
    import fastnn

    info = fastnn.backend_info()
    print(f"fastnn {fastnn.__version__}")
    print(f"backends available: {', '.join(info['available'])}")
    print(f"active backend:     {info['active']}")
    print(f"instruction set:    {info['isa']}")
    print(f"threads:            {info['num_threads']}")
    for name, why in info["errors"].items():
        print(f"unavailable {name}: {why}")
    if _args.json:
        print(json.dumps(info))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="print backends, instruction set and threads")
    p_info.add_argument("--json", action="store_true", help="also print the info as JSON")
    p_info.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
