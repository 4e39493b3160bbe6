"""``regulab doctor TARGET --input-shape …``: check a model for train/eval mistakes."""
from __future__ import annotations

import argparse

HELP = """\
Check a model for train/eval mistakes and risky dropout placements.

TARGET is 'path/to/file.py:factory' or 'package.module:factory'. The factory
is called with no arguments and must return a torch.nn.Module. A file path is
imported from that file alone (importlib spec_from_file_location; no directory
is added to sys.path); a dotted module name is imported from the current
sys.path. The file's top-level code runs, so only point the doctor at code
you trust.

The model runs on one seeded random input of --input-shape (batch first):
twice in eval mode (outputs must agree; the module that makes them differ is
named), then with each dropout site switched on alone (dropout feeding
BatchNorm, dropout on logits/input, extreme p).

Exit status: 0 no error-level finding, 1 an error-level finding, 2 bad usage.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="check a model for train/eval mistakes and risky dropout placement",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="TARGET", help="'path/to/file.py:factory' or 'package.module:factory'")
    p.add_argument("--input-shape", required=True, metavar="SHAPE",
                   help="example input shape, batch first: 64,40 or 8x3x32x32")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "int64"),
                   help="input dtype (int64 for token ids; default float32)")
    p.add_argument("--int-high", type=int, default=100, metavar="N",
                   help="int64 inputs are drawn from [0, N) (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the example input and dropout masks (default 0)")
    p.add_argument("--json", action="store_true", help="print findings as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .diagnose import DoctorError, diagnose
    from .findings import findings_to_json, format_findings, has_errors
    from .loader import build_model, parse_shape

    shape = parse_shape(args.input_shape)
    if args.seed < 0:
        raise DoctorError(f"doctor: --seed must be an integer >= 0, got {args.seed}")
    if args.dtype == "int64" and args.int_high < 1:
        raise DoctorError(f"doctor: --int-high must be an integer >= 1, got {args.int_high}")
    model = build_model(args.target)
    gen = torch.Generator().manual_seed(args.seed)
    if args.dtype == "int64":
        x = torch.randint(0, args.int_high, shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen, dtype=getattr(torch, args.dtype))
    findings = diagnose(model, x, seed=args.seed)
    print(findings_to_json(findings) if args.json else format_findings(findings))
    return 1 if has_errors(findings) else 0
