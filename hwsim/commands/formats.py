"""``hwsim formats``: every named number format with its width, range and precision."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser("formats", help="list the number formats", description=__doc__)
    p.set_defaults(func=main)


def rows():
    """(name, aliases, kind, bits, max, min_normal, min_subnormal, precision bits) per distinct format."""
    from kernels.formats import FORMATS, MXFormat
    from kernels.mac import precision_bits

    seen = {}
    for name, fmt in FORMATS.items():
        seen.setdefault(id(fmt), (fmt, []))[1].append(name)
    out = []
    for fmt, names in seen.values():
        aliases = [n for n in names if n != fmt.name]
        bits = f"{fmt.bits}+8/{fmt.block}" if isinstance(fmt, MXFormat) else str(fmt.bits)
        out.append((fmt.name, ", ".join(aliases), fmt.kind, bits, fmt.max, fmt.min_normal, fmt.min_subnormal,
                    precision_bits(fmt)))
    return out


def main(args) -> int:
    print(f"{'format':<20} {'aliases':<22} {'kind':<6} {'bits':>7} {'max':>12} {'min normal':>12} "
          f"{'min subnormal':>13} {'precision':>9}")
    for name, aliases, kind, bits, mx, mn, ms, prec in rows():
        sub = f"{ms:13.4g}" if ms is not None else f"{'-':>13}"
        print(f"{name:<20} {aliases:<22} {kind:<6} {bits:>7} {mx:12.4g} {mn:12.4g} {sub} {prec:>9}")
    print("\nAlso: int<N> (N=2..32), uint<N> (N=1..32), fixed<W>.<F>, ufixed<W>.<F>, e<E>m<M> (E=1..11, M=0..52).")
    return 0
