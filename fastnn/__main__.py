"""The ``fastnn`` command line: ``fastnn info``, ``fastnn demo``, ``fastnn bench``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _info(_args) -> int:
    import fastnn

    info = fastnn.backend_info()
    if _args.json:        # JSON alone, for scripts (`fastnn info --json | jq .isa`)
        print(json.dumps({"version": fastnn.__version__, **info}))
        return 0
    print(f"fastnn {fastnn.__version__}")
    print(f"backends available: {', '.join(info['available'])}")
    print(f"active backend:     {info['active']}")
    emulated = " (EMULATED: a test build, slow)" if info.get("isa_emulated") else ""
    print(f"instruction set:    {info['isa']}{emulated}")
    print(f"threads:            {info['num_threads']}")
    for name, why in info["errors"].items():
        print(f"unavailable {name}: {why}")
    return 0


def _demo(args) -> int:
    import fastnn
    from .bench import one_line
    from .demo import DataError, run

    if args.backend:
        try:
            fastnn.set_backend(args.backend)
        except ImportError as exc:
            print(f"fastnn demo: {exc}", file=sys.stderr)
            return 1
    if args.threads:
        fastnn.set_num_threads(args.threads)
    try:
        run(epochs=args.epochs, batch_size=args.batch_size,
            sample=True if args.sample else None, verbose=args.verbose)
    except DataError as exc:   # a corrupt or missing data set: no traceback
        print(f"fastnn demo: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from .bench import positive_int, thread_count
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn command line")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="print backends, instruction set and threads")
    p_info.add_argument("--json", action="store_true",
                        help="print the info as one JSON object, nothing else")
    p_info.set_defaults(func=_info)
    p_demo = sub.add_parser("demo", help="train the example CNN on Fashion-MNIST")
    p_demo.add_argument("--epochs", type=positive_int, default=10,
                        help="training epochs (default 10)")
    p_demo.add_argument("--batch-size", type=positive_int, default=128,
                        help="batch size (default 128)")
    p_demo.add_argument("--sample", action="store_true",
                        help="use the shipped 3000/1000-image sample even if the full "
                             "dataset is installed")
    p_demo.add_argument("--backend", choices=["c", "numba", "numpy"], default=None,
                        help="backend (default: the fastest available)")
    p_demo.add_argument("--threads", type=thread_count, default=None,
                        help="threads (default: the backend's own: OMP_NUM_THREADS for C "
                             "and NUMBA_NUM_THREADS for Numba if set, else the CPUs "
                             "available)")
    p_demo.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                        help="0 silent, 1 progress bar, 2 one line per epoch (default 1)")
    p_demo.set_defaults(func=_demo)
    from .bench import add_parser as _add_bench_parser
    _add_bench_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
