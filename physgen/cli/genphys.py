"""``physgen genphys check [--pde NAME]``: classify physical processes against GenPhys's C1 and C2
(arXiv 2304.02637) and print why."""
from __future__ import annotations

import json
import textwrap

from ..errors import UserError
from ..genphys.catalogue import CATALOGUE, get_physical_process
from ..genphys.framework import classify

COLUMNS = ("name", "PDE", "ω(k)", "C1", "C2", "verdict", "reason")


def register(sub) -> None:
    p = sub.add_parser("genphys", help="GenPhys: which physical processes are generative models (C1, C2)")
    gsub = p.add_subparsers(dest="genphys_command", metavar="ACTION")
    gsub.required = True
    c = gsub.add_parser("check", help="classify the catalogued PDEs (or one) against C1 (positive kernel) and C2 (smoothing)")
    c.add_argument("--pde", default=None, help="one PDE by name (default: all); e.g. yukawa, wave")
    c.add_argument("--dim", type=int, default=2, help="data dimension N for the kernel check (default 2)")
    c.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a PDE parameter, e.g. m=0.5 (with --pde)")
    c.add_argument("--format", default="text", choices=("text", "markdown", "json"), help="output format")
    c.add_argument("--details", action="store_true", help="also print the numerical evidence for C1 and C2")
    c.set_defaults(func=run_check)


def _params(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            raise UserError(f"--param {key}: value must be a number, got {value!r}") from None
    return out


def rows(pde=None, dim: int = 2, params=None) -> list:
    """The verdicts to print (a list of :class:`physgen.genphys.framework.Verdict`)."""
    if dim < 1 or dim > 3:
        raise UserError(f"--dim must be 1, 2 or 3 (the kernel check's grid), got {dim}")
    if params and pde is None:
        raise UserError("--param needs --pde (parameters belong to one PDE)")
    names = list(CATALOGUE) if pde is None else [pde]
    out = []
    for name in names:
        try:
            proc = get_physical_process(name, **(params or {}))
        except TypeError as e:
            raise UserError(f"bad --param for {name!r}: {e}") from None
        out.append(classify(proc, dim))
    return out


def _cells(v) -> list[str]:
    return [v.name, v.pde, v.omega, "pass" if v.c1 else "FAIL", "pass" if v.c2 else "FAIL", v.verdict, v.reason]


def format_table(verdicts, fmt: str = "text", details: bool = False) -> str:
    if fmt == "json":
        return json.dumps([{**dict(zip(COLUMNS, _cells(v))), "c1_detail": v.c1_detail, "c2_detail": v.c2_detail} for v in verdicts], indent=2, ensure_ascii=False)
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(v)) + " |" for v in verdicts]
        if details:
            lines += [""] + [f"- **{v.name}**: C1: {v.c1_detail}. C2: {v.c2_detail}." for v in verdicts]
        return "\n".join(lines)
    widths = {"name": 16, "PDE": 44, "ω(k)": 36, "C1": 4, "C2": 4, "verdict": 24}
    head = "  ".join(col.ljust(widths[col]) for col in COLUMNS[:-1]) + "  reason"
    lines = [head, "-" * len(head)]
    for v in verdicts:
        cells = _cells(v)
        first = "  ".join(textwrap.shorten(c, widths[col], placeholder="…").ljust(widths[col]) for col, c in zip(COLUMNS[:-1], cells[:-1]))
        lines.append(f"{first}  {cells[-1]}")
        if details:
            lines.append(f"{'':18}C1: {v.c1_detail}")
            lines.append(f"{'':18}C2: {v.c2_detail}")
    return "\n".join(lines)


def run_check(args) -> int:
    verdicts = rows(args.pde, args.dim, _params(args.param))
    print(format_table(verdicts, args.format, args.details))
    return 0
